"""Uncertainty of the probe's numbers, each a 95% interval: Wilson's for one fit's accuracy on N test images (it
stays inside [0, 1] and is sound near 0 and 1, unlike p +- 1.96 sqrt(p(1-p)/N)); Student's t over paired draws;
a paired percentile bootstrap over test images for two all-label fits. ``verdict`` reads one in words."""
import math

import numpy as np

BOOTSTRAP = 2000  # resamples of the test images
Z95 = 1.959963984540054


def wilson(accuracy: float, n: int) -> tuple[float, float]:
    """95% Wilson score interval (low, high) of a proportion ``accuracy`` measured on ``n`` items."""
    if n <= 0:
        return float("nan"), float("nan")
    z2 = Z95 * Z95
    centre = (accuracy + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(accuracy * (1 - accuracy) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_draws(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """(mean of a - b, 95% t-interval low, high) over paired draws; one draw gives no interval (NaN)."""
    from scipy.stats import t

    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    mean = float(diff.mean())
    if diff.size < 2:
        return mean, float("nan"), float("nan")
    half = float(t.ppf(0.975, diff.size - 1) * diff.std(ddof=1) / math.sqrt(diff.size))
    return mean, mean - half, mean + half


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """(accuracy of a - accuracy of b, 95% paired bootstrap low, high) over the same test images."""
    diff = np.asarray(correct_a, dtype=np.int8) - np.asarray(correct_b, dtype=np.int8)
    rng = np.random.default_rng(seed)
    means = np.array([diff[rng.integers(0, diff.size, diff.size)].mean() for _ in range(BOOTSTRAP)])
    low, high = np.percentile(means, [2.5, 97.5])
    return float(diff.mean()), float(low), float(high)


def verdict(low: float, high: float) -> str:
    """"ahead" when the whole interval is above 0, "behind" below, else (or without one) "within noise"."""
    if math.isfinite(low) and low > 0:
        return "ahead"
    if math.isfinite(high) and high < 0:
        return "behind"
    return "within noise"


def packed(correct: np.ndarray) -> str:
    """A per-image correctness vector as a string of 0 and 1 (to keep it in a JSON cache row)."""
    return "".join(np.where(np.asarray(correct, dtype=bool), "1", "0"))


def unpacked(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8) == ord("1")
