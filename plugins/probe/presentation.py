"""svm-probe's page from its rows: the results table (every accuracy with its interval), the trained D against
each baseline (paired differences with intervals, and what they say), the metrics, and how each row was made.

A row is the plain dict ``plugin.py`` computes or reads from the cache: ``accuracies`` (one per draw, or one for
all labels), ``tested`` (test images), ``correct`` (all labels: each test image right or wrong, packed), and for
L2-SVM rows ``dim``, ``seconds`` (one final fit), ``C``, ``C_table``, ``solvers``, ``fit_total``,
``features_seconds``; for the supervised CNN ``kept`` (the steps whose weights were kept).
"""
import numpy as np

from ganlab import Result, Table

from .intervals import paired_bootstrap, paired_draws, unpacked, verdict, wilson

ROW_NAMES = {"d": "DCGAN discriminator (this checkpoint)", "pixels": "raw pixels",
             "random-d": "same D architecture, random init", "kmeans": "K-means triangle (Coates & Ng 2011)",
             "supervised": "supervised CNN, D's architecture"}
SHORT_NAMES = {"pixels": "raw pixels", "random-d": "a random D", "kmeans": "K-means"}
PAIRED = ("pixels", "random-d", "kmeans")  # unsupervised features, fitted on the same draws and images as D's
VERDICTS = {"ahead": "D ahead", "behind": "D behind", "within noise": "within noise"}
COLUMNS = ["features", "labels", "dim", "draws", "accuracy %", "error %", "seconds per fit", "C"]
# The paper's own figures (Radford, Metz & Chintala 2015), shown beside ours and labelled as such.
PAPER_TABLES = {
    "cifar10": Table(
        "Paper figures (Radford et al. 2015, Table 1), not measured here: CIFAR-10 accuracy. "
        "Their DCGAN's D was trained on ImageNet-1k at 32x32, not on CIFAR-10",
        ["model", "accuracy, all labels", "accuracy, 400 per class"],
        [["1-layer K-means (Coates & Ng 2011, 4,800 feature maps)", "80.6%", "63.7% (± 0.7)"],
         ["3-layer K-means (learned receptive field)", "82.0%", "70.7% (± 0.7)"],
         ["view-invariant K-means", "81.9%", "72.6% (± 0.7)"],
         ["Exemplar CNN", "84.3%", "77.4% (± 0.2)"],
         ["DCGAN (ours) + L2-SVM (ImageNet-1k D, 28,672 features)", "82.8%", "73.8% (± 0.4)"]]),
    "svhn": Table(
        "Paper figures (Radford et al. 2015, Table 2), not measured here: SVHN test error with 1000 labels "
        "(the paper gives no spread for its DCGAN row, and does not say what data its SVHN GAN was trained on)",
        ["model", "error"],
        [["KNN", "77.93%"], ["TSVM", "66.55%"], ["M1+M2", "36.02%"], ["SWWAE", "23.56%"],
         ["supervised CNN with the same architecture", "28.87% (validation)"],
         ["DCGAN (ours) + L2-SVM", "22.48%"]]),
}


def mode_key(labels_per_class: int | None) -> str:
    return "all" if labels_per_class is None else f"{labels_per_class}pc"


def mode_words(labels_per_class: int | None) -> str:
    return "all labels" if labels_per_class is None else f"{labels_per_class} labels per class"


def result(ctx, rows: dict, modes: list, stored: dict, dim: int, test_split: str, tested: int) -> Result:
    """The probe's Result from its rows ((name, labels_per_class) -> row)."""
    o = ctx.options
    metrics, table = {}, []
    for mode in modes:
        table += [_table_row(name, mode, rows[name, mode], o["ci95"], metrics) for name, m in rows if m == mode]
    paired = differences(rows, modes, ctx.seed)
    for (name, mode), (diff, low, high) in paired.items():
        key = f"d_minus_{name}.{mode_key(mode)}"
        metrics.update({f"{key}.difference": diff, f"{key}.low": low, f"{key}.high": high})
    metrics.update({"d.feature_dim": dim, "baseline_rows_reused": len(stored)})
    tables = [Table("Linear L2-SVM test accuracy (ours, this run)", COLUMNS, table)]
    if paired:
        tables.append(Table("Trained D minus each baseline (percentage points; same draws and test images)",
                            ["baseline", "labels", "D minus baseline", "95% interval", "reading"],
                            [[ROW_NAMES[name], mode_words(mode), *_reading(*values)]
                             for (name, mode), values in paired.items()]))
    paper = PAPER_TABLES.get((ctx.dataset or "").split(":")[0])
    if paper:
        tables.append(paper)
    said = claim(paired, modes)
    text = [*([said] if said else []), legend(o["ci95"], tested),
            *_notes(ctx, rows, modes, stored, dim, test_split, tested)]
    line = ". ".join(part for part in (headline(rows, modes, paired), said) if part)
    return Result(metrics=metrics, tables=tables, text=text, verdict=line)


def claim(paired: dict, modes: list) -> str:
    """The paper's claim in words, per label budget: D's features beat every baseline compared on the same
    draws (the random D: training taught D something; K-means and pixels: other unsupervised features). It
    holds where D is ahead of all of them, does not where D is behind one, and cannot be told apart from noise
    where an interval includes 0. Budgets with the same reading share one clause."""
    readings: dict[str, list] = {}
    for mode in modes:
        found = {name: verdict(low, high) for (name, m), (_, low, high) in paired.items() if m == mode}
        if not found:
            continue
        behind = [SHORT_NAMES[n] for n, r in found.items() if r == "behind"]
        level = [SHORT_NAMES[n] for n, r in found.items() if r == "within noise"]
        reading = (f"does not hold (D behind {_and(behind)})" if behind else
                   f"cannot be told apart from noise (D within noise of {_and(level)})" if level else "holds")
        readings.setdefault(reading, []).append(mode_words(mode))
    if not readings:
        return ""
    names = _and([SHORT_NAMES[n] for n in PAIRED if any(k[0] == n for k in paired)])
    return (f"The paper's claim (D's features beat {names}): "
            + "; ".join(f"{reading} at {_and(budgets)}" for reading, budgets in readings.items()))


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def headline(rows: dict, modes: list, paired: dict) -> str:
    """One line for the report's first screen: D's accuracy at the scarcest labels, and how it stands against
    each baseline there (points, with the 95% interval)."""
    mode = next((m for m in modes if ("d", m) in rows), None)
    if ("d", mode) not in rows:
        return ""
    parts = []
    for name in PAIRED:
        if (name, mode) in paired:
            diff, low, high = (100 * v for v in paired[name, mode])
            span = f"95%: {low:+.1f} to {high:+.1f}" if np.isfinite(low) else "no interval"
            reading = verdict(low, high)
            parts.append(f"within noise of {SHORT_NAMES[name]} ({diff:+.1f} points, {span})"
                         if reading == "within noise" else
                         f"{'beats' if reading == 'ahead' else 'trails'} {SHORT_NAMES[name]} by {abs(diff):.1f} "
                         f"points ({span})")
    accuracy = 100 * float(np.mean(rows["d", mode]["accuracies"]))
    return f"D's features: {accuracy:.1f}% at {mode_words(mode)}" + (f", {'; '.join(parts)}" if parts else "")


def legend(ci95: bool, tested: int) -> str:
    spread = "1.96 standard deviations" if ci95 else "one standard deviation"
    return (f"Bands: with N labels per class, mean ± {spread} of the accuracies over the label draws (how much the "
            f"number moves when other images are labelled); with all labels (one fit), the 95% Wilson interval "
            f"over the {tested} test images. D minus a baseline: the same draws and test images for both, with a "
            "95% t-interval over the draws, or a 95% paired bootstrap over the test images for all labels; "
            "\"within noise\" when the interval includes 0. Seconds per fit: the wall time of one final SVM fit "
            "(choosing C and extracting features not included).")


def _table_row(name: str, mode, row: dict, ci95: bool, metrics: dict) -> list:
    """A row's line in the results table; its accuracy metrics go into ``metrics``."""
    fractions, key = np.asarray(row["accuracies"]), f"{name}.{mode_key(mode)}"
    metrics[f"{key}.accuracy"], metrics[f"{key}.error"] = float(fractions.mean()), float(1 - fractions.mean())
    metrics[f"{key}.std"] = float(fractions.std(ddof=1)) if len(fractions) > 1 else 0.0
    acc = fractions * 100
    if len(acc) > 1:
        std = acc.std(ddof=1) * (1.96 if ci95 else 1)
        accuracy, error = f"{acc.mean():.2f} ± {std:.2f}", f"{100 - acc.mean():.2f} ± {std:.2f}"
    else:
        low, high = metrics[f"{key}.low"], metrics[f"{key}.high"] = wilson(float(fractions[0]), row["tested"])
        accuracy = f"{acc[0]:.2f} ({100 * low:.2f}–{100 * high:.2f})"
        error = f"{100 - acc[0]:.2f} ({100 - 100 * high:.2f}–{100 - 100 * low:.2f})"
    labels = "all" if mode is None else f"{mode} per class"
    return [ROW_NAMES[name], labels, row.get("dim", "-"), len(acc), accuracy, error, f"{row['seconds']:.2f}",
            f"{row['C']:g}" if "C" in row else "-"]


def differences(rows: dict, modes: list, seed: int) -> dict:
    """(baseline, labels_per_class) -> (D minus baseline, 95% low, high), as fractions."""
    found = {}
    for mode, name in ((mode, name) for mode in modes for name in PAIRED):
        d, other = rows.get(("d", mode)), rows.get((name, mode))
        if d is None or other is None:
            continue
        if mode is None and "correct" in d and "correct" in other:
            found[name, mode] = paired_bootstrap(unpacked(d["correct"]), unpacked(other["correct"]), seed)
        elif mode is not None:
            found[name, mode] = paired_draws(d["accuracies"], other["accuracies"])
    return found


def _reading(diff: float, low: float, high: float, no_interval: str = "-") -> list[str]:
    """A difference's cells, in points: the difference, its 95% interval, and what it says."""
    span = f"{100 * low:+.2f} to {100 * high:+.2f}" if np.isfinite(low) else no_interval
    return [f"{100 * diff:+.2f}", span, VERDICTS[verdict(low, high)]]


def _notes(ctx, rows, modes, stored, dim, test_split, tested) -> list[str]:
    o = ctx.options
    text = [f"Features: every conv layer of D after its activation, max-pooled to 4x4 and concatenated "
            f"({dim} dims), BatchNorm statistics: {o['bn_stats']}, preprocessing: {o['preprocess']} "
            f"(K-means: {o['kmeans_preprocess']}); C chosen on a validation split of {o['val_size']} from "
            f"'{o['train_split']}' (label-scarce rows: on draws of their own, not the reported ones); tested on "
            f"'{test_split}' ({tested} images)."]
    reused = list(dict.fromkeys(name for name, _ in stored))
    if reused:
        text.append(f"Baseline rows reused from the cache ({', '.join(reused)}): computed by an earlier report "
                    "on the same images, labels, settings and D architecture (they do not depend on the GAN; "
                    "their times are that report's). --set svm-probe.cache_baselines=false computes them again.")
    for (name, mode), row in rows.items():
        again = "; reused from the cache" if (name, mode) in stored else ""
        if name == "supervised":
            text.append(f"{ROW_NAMES[name]}, {mode_key(mode)}: weights kept from step "
                        f"{', '.join(map(str, row['kept']))} of at most {o['supervised_steps']} (best validation "
                        f"accuracy, patience {o['supervised_patience']} steps){again}")
        else:
            by_c = ", ".join(f"{c:g}: {100 * e:.1f}%" for c, e in row["C_table"])
            text.append(f"{ROW_NAMES[name]}, {mode_key(mode)}: C={row['C']:g}, validation error by C {by_c}; "
                        f"solver {'+'.join(row['solvers'])}, all fits (choosing C included) took "
                        f"{row['fit_total']:.1f} s; features took {row['features_seconds']:.1f} s{again}")
    return text


def seed_table(summary: dict) -> Table | None:
    """Over GAN seeds: D minus each baseline with a 95% t-interval over the seeds (each seed's difference is
    itself paired: the same draws and test images), read as ahead, behind or within noise."""
    metrics = summary.get("components", {}).get("svm-probe")
    if not metrics:
        return None
    rows = []
    for key in sorted(k for k in metrics if k.startswith("d_minus_") and k.endswith(".difference")):
        name, mode = key[len("d_minus_"):-len(".difference")].split(".")
        values = [v for v in metrics[key]["values"] if v is not None]
        rows.append([ROW_NAMES.get(name, name), "all labels" if mode == "all" else mode.replace("pc", " per class"),
                     len(values), *_reading(*paired_draws(values, [0.0] * len(values)), "- (one seed)")])
    if not rows:
        return None
    seeds = len(summary.get("seeds", []))
    return Table(f"svm-probe over {seeds} GAN seeds: trained D minus each baseline (points; 95% t-interval over "
                 "seeds)", ["baseline", "labels", "seeds", "mean difference", "95% interval", "reading"], rows)
