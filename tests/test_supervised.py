"""svm-probe's supervised-CNN baseline: validation early stopping keeps the best check's weights, exactly."""
import numpy as np
import torch

from ganlab.model.networks import ModelConfig
from ganlab_plugins.probe.supervised import accuracy, train_classifier

CONFIG = ModelConfig(image_size=16, channels=1, nz=8, ngf=8, ndf=8)


def _bars(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Noisy 16x16 images: a bright bar in the top half (class 0) or in the bottom half (class 1)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(2, (n,), generator=g)
    images = torch.randint(0, 60, (n, 1, 16, 16), generator=g, dtype=torch.uint8)
    for i, label in enumerate(labels.tolist()):
        images[i, 0, 2 + 8 * label:6 + 8 * label, 3:13] = 230
    return images, labels.numpy()


def test_early_stopping_keeps_the_best_checks_weights(one_thread):
    x, y = _bars(96, seed=0)
    xv, yv = _bars(64, seed=1)
    model, step = train_classifier(CONFIG, x, y, num_classes=2, steps=400, batch_size=32, seed=3,
                                   val_images=xv, val_labels=yv, patience=50, check_every=25)
    # an easy task: validation accuracy saturates early, so training stops well before 400 steps
    assert step % 25 == 0 and step <= 400 - 50
    assert accuracy(model, xv, yv) == 1.0
    # the kept weights are exactly those of a plain run stopped at that step (same seed, same batches)
    plain, plain_step = train_classifier(CONFIG, x, y, num_classes=2, steps=step, batch_size=32, seed=3)
    assert plain_step == step
    with torch.no_grad():
        inputs = xv.float() / 127.5 - 1
        torch.testing.assert_close(model(inputs), plain(inputs), rtol=1e-5, atol=1e-5)


def test_no_patience_runs_every_step_and_keeps_the_last(one_thread):
    x, y = _bars(32, seed=0)
    model, step = train_classifier(CONFIG, x, y, num_classes=2, steps=30, batch_size=16, seed=0,
                                   val_images=x, val_labels=y, patience=0)
    assert step == 30 and not model.training
