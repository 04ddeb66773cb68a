"""Built-in experiments for ``ganlab run NAME``: the paper's probe protocols."""
from __future__ import annotations

from ganlab import Experiment, hookimpl

from .probe.settings import PAPER_C_GRID

EXPERIMENTS = [
    Experiment(
        name="probe-digits",
        description="train a DCGAN on the embedded sklearn digits (32x32 grey) and write the full report",
        train={"dataset": "digits", "image_size": 32, "channels": 1, "ngf": 32, "ndf": 32, "epochs": 30,
               "batch_size": 64},
        # UMAP off: on a fresh machine its numba compilation alone (~40 s) would be a third of this small run
        # (svm-probe's embedding.py); --set svm-probe.umap=true draws it
        component_options={"svm-probe.labels_per_class": "10,all", "svm-probe.draws": 5, "svm-probe.umap": False},
    ),
    Experiment(
        name="probe-svhn",
        description="the paper's Table 2: L2-SVM on 1000 SVHN labels, error over 100 draws (the released SVHN "
                    "recipe: 5x5 kernels, lr 5e-4, batch 64)",
        # The authors' released SVHN run (dcgan_code: svhn_unsup_all_conv_dcgan_100z_gaussian_lr_0.0005_64mb):
        # 5x5 kernels, D widths 64-128-256, lr 5e-4, batch 64, 100-d Gaussian z. The paper does not say what
        # data it trained on; train+extra is ganlab's choice.
        train={"dataset": "svhn", "split": "train+extra", "preset": "dcgan32", "kernel_size": 5, "lr": 5e-4,
               "batch_size": 64, "epochs": 5},
        # A 10,000-image validation split of SVHN train; 100 labels per class; C from the authors' 7 values,
        # chosen by mean validation error over 10 draws of its own; test error over 100 other draws as mean
        # +- 1.96 std (the authors' script prints 1.96 std; the paper's Table 2 gives no spread).
        component_options={"svm-probe.labels_per_class": "100", "svm-probe.val_size": 10000,
                           "svm-probe.select_draws": 10, "svm-probe.draws": 100, "svm-probe.ci95": True,
                           "svm-probe.C_grid": list(PAPER_C_GRID),
                           "svm-probe.train_split": "train", "svm-probe.test_split": "test"},
        # the checkpoint is chosen by validation accuracy ("for all hyperparameter and model selection"), not
        # the last epoch
        select_epoch="probe-epochs.d.val_accuracy",
    ),
    Experiment(
        name="probe-cifar10",
        description="the paper's Table 1: L2-SVM on D features with all 50,000 CIFAR-10 labels and 400 per class",
        train={"dataset": "cifar10", "preset": "dcgan32", "epochs": 10},
        component_options={"svm-probe.labels_per_class": "400,all", "svm-probe.val_size": 5000,
                           "svm-probe.draws": 10, "svm-probe.C_grid": list(PAPER_C_GRID)},
        select_epoch="probe-epochs.d.val_accuracy",
    ),
]


@hookimpl
def ganlab_register_experiments(register):
    for experiment in EXPERIMENTS:
        register(experiment)
