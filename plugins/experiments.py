"""Built-in experiments for ``ganlab run NAME``."""
from __future__ import annotations

from ganlab import Experiment, hookimpl

EXPERIMENTS = [
    Experiment(
        name="probe-digits",
        description="train a DCGAN on the embedded sklearn digits (32x32 grey) and write the full report",
        train={"dataset": "digits", "image_size": 32, "channels": 1, "ngf": 32, "ndf": 32, "epochs": 30,
               "batch_size": 64},
    ),
]


@hookimpl
def ganlab_register_experiments(register):
    for experiment in EXPERIMENTS:
        register(experiment)
