"""Built-in experiments for ``ganlab run NAME``: the paper's probe protocols."""
from ganlab import Experiment, hookimpl

from .probe.settings import PAPER_C_GRID

# The recipe benchmarks/recipe_search.py measured on validation splits of MNIST and grey CIFAR-10 (every
# configuration and its result: benchmarks/recipe_results.md): G 32 and D 128 wide (each doubling of D from 32
# raised D's best all-label validation accuracy on grey CIFAR-10, 49.0 -> 50.7 -> 52.6%, and held the rest
# within the draws' spread; on all of CIFAR-10 only 128 wide beats K-means; ~6,000 images still train and probe
# in about 31 minutes on two threads), 30 epochs of batch 64 at the paper's lr and beta1, the epoch with the best
# validation accuracy of a quick probe, D's BatchNorm statistics recomputed on real images, every layer pooled,
# features as they are (the variants that did best for D there).
RECIPE = {"image_size": 32, "ngf": 32, "ndf": 128, "epochs": 30, "batch_size": 64, "lr": 2e-4, "beta1": 0.5}
SELECT = "probe-epochs.d.val_accuracy"  # chosen on a validation split of the training images, never the test
PROBE_OPTIONS = {"svm-probe.labels_per_class": ["10", "100", "all"], "svm-probe.draws": 10,
                 # UMAP off: on a fresh machine its numba compilation alone (~40 s) is a large part of a small
                 # run (svm-probe's embedding.py); --set svm-probe.umap=true draws it
                 "svm-probe.umap": False}

EXPERIMENTS = [
    Experiment(
        name="probe",
        description="the paper's claim on any labelled dataset (--dataset, --data-root; a folder with train/ and "
                    "test/ class folders works): train with the measured recipe, choose the epoch on validation "
                    "accuracy, compare D's features with a random D, K-means and pixels",
        train=RECIPE, components=("svm-probe", "probe-epochs"), component_options=PROBE_OPTIONS,
        select_epoch=SELECT,
    ),
    Experiment(
        name="probe-digits",
        description="the probe recipe on the embedded sklearn digits (32x32 grey), with the full report",
        # D stays 32 wide: twice as wide doubles the README's first command (78 s -> 144 s, past its speed
        # target) and, on 898 training digits, moves no row of the probe beyond its spread
        train={**RECIPE, "dataset": "digits", "channels": 1, "ndf": 32},
        # the digits' training split holds about 90 images per class: no 100-per-class row
        component_options={**PROBE_OPTIONS, "svm-probe.labels_per_class": ["10", "all"], "svm-probe.draws": 5},
        # The full report is about G too, so it stays on the last epoch: the epoch where D's validation accuracy
        # peaks can be one where G has collapsed (epoch 21 of the default run), and probe-epochs' plot across
        # the run shows where D peaks.
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
        select_epoch=SELECT,
    ),
    Experiment(
        name="probe-cifar10",
        description="the paper's Table 1: L2-SVM on D features with all 50,000 CIFAR-10 labels and 400 per class",
        train={"dataset": "cifar10", "preset": "dcgan32", "epochs": 10},
        component_options={"svm-probe.labels_per_class": "400,all", "svm-probe.val_size": 5000,
                           "svm-probe.draws": 10, "svm-probe.C_grid": list(PAPER_C_GRID)},
        select_epoch=SELECT,
    ),
]


@hookimpl
def ganlab_register_experiments(register):
    for experiment in EXPERIMENTS:
        register(experiment)
