"""Experiments: named recipes for ``ganlab run NAME`` (what to train, then which components to run)."""
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Experiment:
    """A recipe. ``train`` holds training options (keys of ``ganlab.defaults.TrainOptions``).

    ``components`` lists the evaluators/analyses to run (None: every applicable one); ``component_options`` sets
    their options ({"svm-probe.labels_per_class": 10}); ``report_dataset`` lets the report use another dataset
    than training (None: the training dataset). ``select_epoch`` ("COMPONENT.METRIC", a cheap component's
    validation metric) reports on the epoch where it is best (by its declared direction) instead of the last
    (``ganlab report --select-epoch``).
    """

    name: str
    description: str
    train: dict[str, Any] = field(default_factory=dict)
    components: tuple[str, ...] | None = None
    component_options: dict[str, Any] = field(default_factory=dict)
    report_dataset: str | None = None
    select_epoch: str | None = None
