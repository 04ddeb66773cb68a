"""Option values the probe's evaluators and the paper's experiments share: the C grids, and list options."""
from typing import Any

from ganlab import GanlabError

#: The C values searched by default: tiny, because D is large (28,672 features for the paper's D).
DEFAULT_C_GRID = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 1e-1)
#: The authors' C values (dcgan_code, svhn/svhn_semisup_analysis.py), for the paper-reproduction experiments.
PAPER_C_GRID = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2)
SOLVERS = ("auto", "kernel", "liblinear", "torch")  # what svm-probe.solver takes (solver.py)
MIN_POSITIVE = 1e-12  # the least C a grid takes: at C = 0 the SVM learns nothing


def listed(value: Any) -> list:
    """A list option's values: ``--set`` turns "a,b" into a list; a value set in code may be a single one.
    Empty strings are dropped, so ``--set svm-probe.baselines=`` means none."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return [v.strip() if isinstance(v, str) else v for v in values if not isinstance(v, str) or v.strip()]


def names(value: Any, known: tuple[str, ...], where: str) -> list[str]:
    """The names a list option holds, each one of ``known``: a one-line error names the others."""
    chosen = [str(v) for v in listed(value)]
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise GanlabError(f"{where} takes {', '.join(known)}, not {', '.join(unknown)}")
    return chosen
