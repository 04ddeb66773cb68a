"""Analysis ``vector-arithmetic`` and command ``ganlab arithmetic``: concept arithmetic on z (section 6.3, figs 7-8).

A concept is the mean z of its exemplars (3, as the paper: single samples were unstable), picked by index from a
seeded bank of z's (``bank.png``). An expression such as ``smiling_woman - neutral_woman + neutral_man`` combines
the means; G draws the result and 8 neighbours (plus uniform noise in [-0.25, 0.25]).

On a labelled dataset the report section picks the concepts itself: a classifier trained on real training images
(pixels / 255, or standardised D features, -> PCA(50) -> logistic regression) labels the bank, and each class's
concept is its ``exemplars`` most confident samples. ``match_rate``: for each class c and the next one d, the share
of the images of ``c - c + d`` and ``c - d + d`` (result and 8 neighbours) read as d and c; chance is 1/classes.
"""
import math
import re
from importlib import resources

import click

from ganlab import Analysis, GanlabError, Image, Option, Result, Table, hookimpl

from . import arithmetic_expr as ax
from . import generate

NEIGHBOURS = 8


def page(*, arithmetic_png: bytes, bank_png: bytes, **fields) -> str:
    """The self-contained index.html (``arithmetic.html``), every string escaped by jinja2's autoescape."""
    import base64

    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = resources.files(__package__).joinpath("arithmetic.html").read_text(encoding="utf-8")
    return env.from_string(template).render(**fields, arithmetic_png=base64.b64encode(arithmetic_png).decode(),
                                            bank_png=base64.b64encode(bank_png).decode())


def exemplar_notes(concepts: dict[str, list[int]], coeffs: dict[str, float]) -> list[str]:
    """Warnings about concepts with other than 3 exemplars, or not used in the expression."""
    notes = [f"concept {name} has {len(idx)} exemplar{'s' * (len(idx) != 1)}; the paper averages "
             f"{ax.EXEMPLARS} because single samples were unstable" for name, idx in concepts.items()
             if len(idx) != ax.EXEMPLARS]
    unused = [name for name in concepts if name not in coeffs]
    return notes + ([f"not used in the expression: {', '.join(unused)}"] if unused else [])


def draw(G, z, device):
    """G(z) as uint8 images, refused when G's output is not finite."""
    from ganlab import to_uint8

    return to_uint8(generate(G, z, device, check="drawn for the arithmetic"))


def draw_expression(G, device, bank_z, bank_u8, concepts, expression: str, seed: int, noise: float,
                    unused: bool = True):
    """(coefficients, uint8 images of the result and its neighbours, the picture's rows): (label, exemplar images,
    mean image) per concept, those in the expression first."""
    import torch

    coeffs = ax.parse_expression(expression, concepts)  # valid: checked, or made from concept names
    means = ax.concept_means(bank_z, concepts)
    block = draw(G, ax.neighbourhood(ax.combine(coeffs, means), NEIGHBOURS, noise, seed), device)
    mean_u8 = dict(zip(means, draw(G, torch.stack(list(means.values())), device)))
    order = list(coeffs) + ([name for name in concepts if name not in coeffs] if unused else [])
    return coeffs, block, [(f"{coeffs[name]:+g} x {name} {concepts[name]}" if name in coeffs
                            else f"(unused) {name} {concepts[name]}", bank_u8[concepts[name]], mean_u8[name])
                           for name in order]


@click.command("arithmetic")
@click.argument("checkpoint", type=click.Path())
@click.option("--concept", "concept_texts", multiple=True, required=True, metavar="NAME=I,J,K",
              help="a concept: its name (letters, digits, _) and bank indices of its exemplars (3 recommended)")
@click.option("--expr", "expression", required=True, help="e.g. 'smiling_woman - neutral_woman + neutral_man'")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="folder for the page and images")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True, help="seed of the bank")
@click.option("--bank", type=click.IntRange(1, 1024), default=100, show_default=True, help="samples in the bank")
@click.option("--noise", type=click.FloatRange(0), default=0.25, show_default=True, help="neighbours' noise scale")
@click.option("--device", default="auto", show_default=True)
def arithmetic_command(checkpoint, concept_texts, expression, out, seed, bank, noise, device) -> None:
    """Concept arithmetic on z (the paper's figure 7): writes arithmetic.png, bank.png and index.html to --out."""
    from ganlab import StagedFolder, load, select_device

    if not math.isfinite(noise):  # passes click's range check, then makes every neighbour NaN
        raise GanlabError(f"--noise {noise}: give a finite number, e.g. 0.25")
    concepts = ax.parse_concepts(concept_texts, bank)
    coeffs = ax.parse_expression(expression, concepts)  # both checked before anything is loaded or written
    notes = exemplar_notes(concepts, coeffs)
    with StagedFolder(out, "arithmetic", legacy=("arithmetic.png", "bank.png", "index.html")) as folder:
        device = select_device(device)
        gan = load(checkpoint, device)
        bank_z = ax.make_bank(gan.config, bank, seed)
        bank_u8 = draw(gan.generator, bank_z, device)
        _, block, used = draw_expression(gan.generator, device, bank_z, bank_u8, concepts, expression, seed + 1, noise)
        ax.arithmetic_picture(expression, used, block).save(folder.staging / "arithmetic.png")
        ax.numbered_grid(bank_u8).save(folder.staging / "bank.png")
        rows = [{"name": name, "indices": ", ".join(map(str, idx)),
                 "coefficient": f"{coeffs[name]:+g}" if name in coeffs else "unused"}
                for name, idx in concepts.items()]
        folder.write_text("index.html", page(
            expression=expression, combination=ax.format_coeffs(coeffs), concepts=rows, notes=notes,
            checkpoint=str(checkpoint), seed=seed, bank=bank, noise=noise,
            arithmetic_png=(folder.staging / "arithmetic.png").read_bytes(),
            bank_png=(folder.staging / "bank.png").read_bytes()))
        out = folder.commit()
    for note in notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"{expression.strip()} = {ax.format_coeffs(coeffs)}")
    for name, what in (("arithmetic.png", "concepts, the result and its 8 neighbours"),
                       ("bank.png", f"the numbered bank of {bank} samples"), ("index.html", "the page")):
        click.echo(f"wrote {out / name} ({what})")


def expressions(names: list[str], free: int, pictures: int) -> list[tuple[str, bool]]:
    """(expression, show as picture): c - c + d and c - d + d for every class, then a - b + c triples."""
    n = len(names)
    sanity = [e for k, c in enumerate(names) for e in (f"{c} - {c} + {names[(k + 1) % n]}",
                                                       f"{c} - {names[(k + 1) % n]} + {names[(k + 1) % n]}")]
    sanity = list(dict.fromkeys(sanity))  # one class: both are c - c + c
    triples = [f"{names[k]} - {names[(k + 1) % n]} + {names[(k + 2) % n]}" for k in range(min(free, n))] if n >= 3 \
        else []
    return [(e, i < pictures) for i, e in enumerate(sanity)] + [(e, True) for e in triples]


def concept_names(ctx, labels) -> dict[int, str]:
    """Class label -> a unique concept name: the dataset's class name made a valid name, else class_<label>."""
    classes = ctx.layout.classes if ctx.layout and ctx.layout.classes else None
    names: dict[int, str] = {}
    for label in map(int, labels):
        name = re.sub(r"[^A-Za-z0-9_]", "_", classes[label] if classes and 0 <= label < len(classes) else str(label))
        name = name if ax.is_concept_name(name) else f"class_{name}"
        names[label] = f"{name}_{label}" if name in names.values() else name
    return names


def train_classifier(ctx):
    """(classifier, its input from uint8 images, its held-out accuracy or None, what it reads and was trained on)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ganlab import discriminator_features

    pixels = ctx.options["classifier"] == "pixels"
    if not pixels and ctx.gan.discriminator is None:
        raise GanlabError("vector-arithmetic.classifier=discriminator needs a checkpoint with D; use pixels")

    def features(u8):
        if pixels:
            return u8.reshape(len(u8), -1).float().numpy() / 255.0
        return discriminator_features(ctx.gan.discriminator, u8, device=ctx.device)

    images, labels = ctx.split(ctx.train_split, limit=ctx.options["train_limit"])
    X, y = features(images[labels >= 0]), labels[labels >= 0].numpy()
    if len(set(y.tolist())) < 2:
        raise GanlabError(f"vector-arithmetic needs at least 2 classes in the {ctx.train_split} split")
    model = make_pipeline(*([] if pixels else [StandardScaler()]), PCA(min(50, X.shape[1], len(X) - 1), random_state=0),
                          LogisticRegression(C=1.0, max_iter=1000)).fit(X, y)
    accuracy = None
    if ctx.heldout_split:
        test, test_labels = ctx.split(ctx.heldout_split, limit=ctx.options["train_limit"])
        if (test_labels >= 0).any():
            accuracy = float(model.score(features(test[test_labels >= 0]), test_labels[test_labels >= 0].numpy()))
    what = "pixels / 255" if pixels else "D's pooled features, standardised"
    return model, features, accuracy, (f"{what} -> PCA(50) -> logistic regression (C = 1), trained on {len(y)} "
                                       f"{ctx.train_split} images")


def pick_concepts(probs, pred, classes, names: dict[int, str], exemplars: int):
    """Per class its ``exemplars`` most confident bank samples: (concepts, their probabilities, classes skipped)."""
    import numpy as np

    concepts, confidence, skipped = {}, {}, []
    for column, label in enumerate(map(int, classes)):
        members = np.flatnonzero(pred == label)
        members = members[np.argsort(-probs[members, column], kind="stable")][:exemplars]
        if len(members) < exemplars:
            skipped.append(f"{names[label]} ({len(members)})")
            continue
        concepts[names[label]] = [int(i) for i in members]
        confidence[names[label]] = [float(probs[i, column]) for i in members]
    return concepts, confidence, skipped


def read_expressions(ctx, bank_z, bank_u8, concepts, read):
    """The expressions table's rows, their pictures, and the images read as the expected class (matched, judged)."""
    import numpy as np

    o, rows, images, matched, judged = ctx.options, [], [], 0, 0
    for k, (expression, picture) in enumerate(expressions(list(concepts), o["expressions"], o["pictures"])):
        coeffs, block, used = draw_expression(ctx.gan.generator, ctx.device, bank_z, bank_u8, concepts, expression,
                                              ctx.seed + 1 + k, o["noise"], unused=False)
        reading, expected = read(block), ax.expected_concept(coeffs)
        hits = sum(r == expected for r in reading) if expected else None
        if expected:
            matched, judged = matched + hits, judged + len(reading)
        rows.append([expression, ax.format_coeffs(coeffs), expected or "-", reading[0], ", ".join(reading[1:]),
                     f"{hits}/{len(reading)}" if expected else "-"])
        if picture:
            images.append(Image(f"{expression} (read as {reading[0]}; neighbours: {', '.join(reading[1:])})",
                                np.asarray(ax.arithmetic_picture(expression, used, block))))
    return rows, images, matched, judged


def verdict(metrics: dict, matched: int, classes: int, exemplars: int) -> str:
    judged, accuracy = metrics["images_judged"], metrics.get("classifier_heldout_accuracy")
    trust = "" if accuracy is None else f" (the classifier reads {accuracy:.1%} of held-out images right)"
    if not judged:
        return f"no class has {exemplars} bank samples the classifier assigns to it: nothing to judge{trust}"
    return (f"{matched} of {judged} results and noise neighbours ({metrics['match_rate']:.1%}) of the expressions "
            f"that reduce to one class are read as that class, against about {1 / classes:.0%} by chance{trust}")


class VectorArithmetic(Analysis):
    name = "vector-arithmetic"
    description = "Class-concept arithmetic on z (the paper's figure 7), read by a classifier trained on real images"
    needs = ("labels", "train_set")
    directions = {"match_rate": "higher", "classifier_heldout_accuracy": "higher", "*": None}
    options = {"bank": Option(256, "samples drawn with the report's seed", min=1),
               "exemplars": Option(3, "bank samples per concept", min=1),
               "expressions": Option(3, "how many a - b + c triples", min=0),
               "pictures": Option(2, "how many sanity expressions are drawn (all are in the table)", min=0),
               "noise": Option(0.25, "the neighbours' noise scale", min=0),
               "train_limit": Option(3000, "real images for training and for the held-out accuracy"),
               "classifier": Option("pixels", "what the classifier reads", choices=("pixels", "discriminator"))}

    def run(self, ctx):
        import numpy as np

        o = ctx.options
        classifier, classify, accuracy, trained_on = train_classifier(ctx)
        names = concept_names(ctx, classifier.classes_)
        bank_z = ax.make_bank(ctx.gan.config, o["bank"], ctx.seed)
        bank_u8 = draw(ctx.gan.generator, bank_z, ctx.device)
        probs = classifier.predict_proba(classify(bank_u8))
        pred = classifier.classes_[probs.argmax(1)]
        concepts, confidence, skipped = pick_concepts(probs, pred, classifier.classes_, names, o["exemplars"])
        rows, images, matched, judged = read_expressions(
            ctx, bank_z, bank_u8, concepts, lambda u8: [names[int(c)] for c in classifier.predict(classify(u8))])
        bank_grid = ax.numbered_grid(bank_u8, [f"{i}:{int(c)}" for i, c in enumerate(pred)])
        images.insert(0, Image(f"bank of {o['bank']} samples (seed {ctx.seed}), numbered, with the classifier's "
                               "reading (index:class label)", np.asarray(bank_grid)))
        label_of = {name: label for label, name in names.items()}
        concept_rows = [[name, label_of[name], ", ".join(map(str, idx)),
                         ", ".join(f"{p:.3f}" for p in confidence[name])] for name, idx in concepts.items()]
        text = [f"Classifier: {trained_on}; held-out accuracy "
                f"{'n/a (no held-out split)' if accuracy is None else f'{accuracy:.1%}'}.",
                f"Concepts: the {o['exemplars']} bank samples per class the classifier assigns to it most confidently."
                + (f" Skipped (too few bank samples of the class): {', '.join(skipped)}." if skipped else ""),
                "match_rate: over the expressions that reduce to one concept (c - c + d expects d, c - d + d expects "
                f"c), the fraction of their result and {NEIGHBOURS} neighbour images (noise +-{o['noise']}) that the "
                f"classifier reads as the expected class: {matched} of {judged}. Chance is about "
                f"1/{len(classifier.classes_)}. Expressions with three different classes have no expected class."]
        metrics = {"match_rate": matched / judged if judged else float("nan"), "concepts": len(concepts),
                   "images_judged": judged}
        if accuracy is not None:
            metrics["classifier_heldout_accuracy"] = accuracy
        return Result(metrics=metrics, images=images, text=text, verdict=verdict(
            metrics, matched, len(classifier.classes_), o["exemplars"]), tables=[
            Table("concepts: the most confident bank samples per class",
                  ["concept", "class label", "bank indices", "classifier probability"], concept_rows),
            Table("expressions, and the classifier's reading of the result and its neighbours",
                  ["expression", "coefficients", "expected", "result read as", "neighbours read as", "matches"],
                  rows)])


@hookimpl
def ganlab_register_analyses(register):
    register(VectorArithmetic())


@hookimpl
def ganlab_register_commands(cli):
    cli.add_command(arithmetic_command)
