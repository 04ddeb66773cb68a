"""vector-arithmetic and `ganlab arithmetic`: parser, concept means, bank, command and report section."""
import base64
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image as PILImage
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import ganlab
from ganlab import GanlabError, ModelConfig, sample_latent
from ganlab.cli import GanlabGroup
from ganlab.model.loaded_gan import LoadedGAN
from ganlab.plugin import registry
from ganlab.plugin.components import RunContext
from ganlab.report import make_report
from ganlab_plugins import arithmetic
from ganlab_plugins import arithmetic_expr as ax

CFG = ModelConfig(image_size=16, channels=1, nz=8, ngf=8, ndf=8)


def _hand_mean(bank, indices):
    return sum(bank[i].double() for i in indices) / len(indices)


def test_identical_concepts_cancel_exactly():
    bank = ax.make_bank(CFG, 64, seed=3)
    concepts = {"x": [1, 2, 3], "y": [10, 20, 30]}
    means = ax.concept_means(bank, concepts)
    assert torch.allclose(means["y"].double(), _hand_mean(bank, [10, 20, 30]), atol=1e-7)
    for expr in ("x - x + y", "y + x - x", "-x + y + x"):
        coeffs = ax.parse_expression(expr, concepts)
        assert ax.expected_concept(coeffs) == "y"
        assert torch.equal(ax.combine(coeffs, means), means["y"]), expr  # exact, not approximately
    assert ax.expected_concept(ax.parse_expression("x - y + y", concepts)) == "x"
    assert ax.expected_concept(ax.parse_expression("x - y + x", concepts)) is None


def test_a_minus_b_plus_c_is_the_hand_computed_combination():
    bank = ax.make_bank(CFG, 100, seed=0)
    concepts = {"smiling_woman": [12, 40, 77], "neutral_woman": [3, 8, 91], "neutral_man": [5, 6, 9]}
    means = ax.concept_means(bank, concepts)
    a, b, c = (_hand_mean(bank, idx).numpy() for idx in concepts.values())
    for expr, want in [("smiling_woman - neutral_woman + neutral_man", a - b + c),
                       ("0.5*smiling_woman - (neutral_woman - neutral_man)/2", 0.5 * a - 0.5 * b + 0.5 * c),
                       ("2 * (smiling_woman + neutral_man) - 3*neutral_woman", 2 * a + 2 * c - 3 * b),
                       ("-neutral_man", -c)]:
        got = ax.combine(ax.parse_expression(expr, concepts), means).double().numpy()
        np.testing.assert_allclose(got, want, atol=1e-6, err_msg=expr)
    assert ax.parse_expression("a - b + c - a", ["a", "b", "c"]) == {"a": 0.0, "b": -1.0, "c": 1.0}
    # signs open the expression or follow '('; whitespace of any kind separates; numbers in any float notation
    assert ax.parse_expression(" -(-a)\n+\t2.5e-1*(-b) ", ["a", "b"]) == {"a": 1.0, "b": -0.25}
    assert ax.parse_expression("a" + " + a" * 300, ["a"]) == {"a": 301.0}


@pytest.mark.parametrize("expr, message", [
    ("smilng_woman - b", "unknown concept 'smilng_woman' at position 1 in --expr; concepts: a, b, c"),
    ("a - b +", "--expr ends after '+' at position 7"),
    ("a + + b", "unexpected '+' at position 5 in --expr: a sign may only open the expression or follow '('"),
    ("a - -b", "unexpected '-' at position 5"),
    ("a * -b", "unexpected '-' at position 5"),
    ("", "--expr is empty"),
    ("   ", "--expr is empty"),
    ("a - b; import os", "unexpected character ';' at position 6"),
    ("a - <script>", "unexpected character '<' at position 5"),
    ("a + 'b'", "unexpected character \"'\" at position 5"),
    ("a - b\u00e9", "unexpected character '\u00e9' at position 6"),
    ("__import__(os)", "unexpected '__import__(os)' at position 1"),  # a call: never evaluated
    ("a.b + c", "unexpected 'a.b' at position 1"),
    ("a ** 2", "unexpected 'a ** 2' at position 1"),
    ("a if b else c", "unexpected 'a if b else c' at position 1"),
    ("True * a", "unexpected 'True' at position 1"),
    ("1 is a", "unexpected '1 is a' at position 1"),
    ("1if a else b", "unexpected '1if a else b' at position 1"),
    ("()", "unexpected '()' at position 1"),
    ("(a - b", "missing ')' for the '(' at position 1"),
    ("((a) - (b", "missing ')' for the '(' at position 8"),
    ("a - b)", "unexpected ')' at position 6"),
    ("(" * 101 + "a" + ")" * 101, "nested more than 100 parentheses deep"),
    ("a" + " + a" * 5000, "--expr is too long to read"),
    ("a b", "cannot read --expr at position 1"),
    ("2a", "cannot read --expr at position 1"),
    ("a +* b", "cannot read --expr at position 4"),
    ("a * b", "cannot multiply 'a' by 'b' at position 3"),
    ("2 * (a + c) * b", "cannot multiply '2 * (a + c)' by 'b' at position 13"),
    ("a / b", "cannot divide by 'b' at position 3"),
    ("a / 0", "division by zero at position 3"),
    ("(a + b) / (1 - 1)", "division by zero at position 9"),
    ("a + 1", "cannot add a number and a concept with '+' at position 3"),
    ("2 + 3", "names no concept"),
    ("1e999 * a", "number '1e999' at position 1 in --expr is too large"),
    ("1" + "0" * 400 + " * a", "is too large"),
    ("1e308 * 1e308 * a", "gives a the coefficient inf: the numbers overflow a float"),
])
def test_bad_expressions_are_refused_naming_the_token(expr, message):
    with warnings.catch_warnings(), pytest.raises(GanlabError) as info:
        warnings.simplefilter("error")  # and nothing else is printed, not even Python's SyntaxWarnings
        ax.parse_expression(expr, ["a", "b", "c"])
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("values, message", [
    (["smiling_woman"], "--concept 'smiling_woman': expected NAME=I,J,K"),
    (["smiling-woman=1,2,3"], "the name 'smiling-woman' must be letters, digits and underscores"),
    (["3d=1,2,3"], "the name '3d'"),
    (["None=1,2,3"], "and not a Python keyword"),  # expressions are read as Python: it would be a constant
    (["a="], "--concept 'a=' has no indices"),
    (["a=1,x,3"], "'x' is not a bank index"),
    (["a=1,-2,3"], "'-2' is not a bank index"),
    (["a=1,,3"], "'' is not a bank index"),
    (["a=1,\u00b2"], "'\u00b2' is not a bank index"),  # a digit to str.isdigit, not to int
    (["a=4,4,5"], "index 4 is given twice"),
    (["a=1,2,3", "a=4,5,6"], "--concept a is given twice"),
    (["a=1,2,140"], "index 140 of concept a is outside the bank of 100 (0..99)"),
    (["a=1,2,100"], "index 100 of concept a is outside the bank of 100 (0..99)"),
    ([], "give at least one --concept"),
])
def test_bad_concepts_are_refused(values, message):
    with pytest.raises(GanlabError, match=re.escape(message)):
        ax.parse_concepts(values, bank=100)


def test_concepts_parse():
    assert ax.parse_concepts(["smiling_woman=12, 40,77", "x_2=99"], bank=100) == {"smiling_woman": [12, 40, 77],
                                                                                   "x_2": [99]}


def test_the_bank_is_seeded_and_stable():
    big, again = ax.make_bank(CFG, 100, seed=7), ax.make_bank(CFG, 100, seed=7)
    assert big.shape == (100, 8, 1, 1) and torch.equal(big, again)
    # index i is the same z whatever the bank's size, and it is what sample_latent draws from the seed
    assert torch.equal(ax.make_bank(CFG, 10, seed=7), big[:10]) and torch.equal(ax.make_bank(CFG, 1, seed=7), big[:1])
    assert torch.equal(ax.make_bank(CFG, 200, seed=7)[:100], big)
    assert torch.equal(big[:64], sample_latent(CFG, 64, torch.Generator().manual_seed(7)))
    assert not torch.equal(ax.make_bank(CFG, 100, seed=8), big)
    uniform = ax.make_bank(ModelConfig(image_size=16, channels=1, nz=8, latent="uniform"), 100, seed=7)
    assert uniform.min() >= -1 and uniform.max() <= 1 and not torch.equal(uniform, big)


def test_neighbours_are_uniform_noise_of_the_given_scale():
    v = torch.randn(8, 1, 1)
    block = ax.neighbourhood(v, 8, 0.25, seed=1)
    assert block.shape == (9, 8, 1, 1) and torch.equal(block[0], v)
    noise = block[1:] - v
    assert noise.abs().max() <= 0.25 + 1e-6 and noise.abs().max() > 0.15 and not torch.equal(block[1], block[2])


def _cli():
    group = GanlabGroup()  # ganlab's own group: GanlabError -> one line and exit 1
    arithmetic.ganlab_register_commands(group)
    return group


@pytest.fixture(scope="module")
def contrasty(tiny_run, tmp_path_factory):
    """tiny_run's last.pt with G's output layer scaled up: its 2-epoch G draws near-constant grey (127-128),
    which would not tell one image from another; this copy's images differ by tens of levels."""
    state = torch.load(tiny_run / "last.pt", weights_only=True)
    state["generator"]["main.6.weight"] *= 300
    path = tmp_path_factory.mktemp("contrast") / "contrast.pt"
    torch.save(state, path)
    return path


def test_command_writes_the_grid_the_bank_and_a_page(contrasty, tmp_path):
    out = tmp_path / "arith"
    args = ["arithmetic", str(contrasty), "--concept", "smiling_woman=12,40,77", "--concept",
            "neutral_woman=3,8,91", "--concept", "neutral_man=5", "--expr",
            "smiling_woman - neutral_woman + neutral_man", "--out", str(out), "--bank", "100", "--device", "cpu"]
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 0, result.output
    for name in ("arithmetic.png", "bank.png", "index.html"):
        assert f"wrote {out / name}" in result.output
    assert "+1 smiling_woman -1 neutral_woman +1 neutral_man" in result.output
    assert "neutral_man has 1 exemplar" in result.output  # the warning about != 3 exemplars
    html = (out / "index.html").read_text()
    assert "smiling_woman - neutral_woman + neutral_man" in html and "12, 40, 77" in html and "1 exemplar" in html
    for name in ("arithmetic.png", "bank.png"):  # the page is self-contained: the same PNGs inline
        assert base64.b64encode((out / name).read_bytes()).decode() in html

    # bank.png: cell i shows G(z_i) for the bank seeded with --seed (0), drawn independently here
    gan = ganlab.load(contrasty, "cpu")
    gen = torch.Generator().manual_seed(0)
    z = torch.cat([sample_latent(gan.config, 64, gen), sample_latent(gan.config, 64, gen)])[:100]
    with torch.no_grad():
        want = ((gan.generator(z) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)[:, 0].numpy()
    grid = np.asarray(PILImage.open(out / "bank.png").convert("L"))
    side, gap, strip, columns = 64, 4, 16, 10  # 16x16 images x4, 10 columns for 100
    assert np.abs(want[1:].astype(int) - want[0]).max(axis=(1, 2)).min() > 20  # cells are told apart
    for i in (0, 7, 42, 99):
        x, y = gap + (i % columns) * (side + gap), gap + (i // columns) * (side + strip + gap)
        np.testing.assert_allclose(grid[y + strip:y + strip + side:4, x:x + side:4], want[i], atol=1)
        assert grid[y:y + strip, x:x + side].min() < 100  # its number is drawn above it
    # arithmetic.png: the red-outlined centre of the 3x3 block is G(mean(12,40,77) - mean(3,8,91) + z_5)
    result_z = (z[[12, 40, 77]].mean(0) - z[[3, 8, 91]].mean(0) + z[5])[None]
    with torch.no_grad():
        centre = ((gan.generator(result_z) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)[0, 0].numpy()
    picture = np.asarray(PILImage.open(out / "arithmetic.png").convert("RGB")).astype(int)
    ys, xs = np.nonzero((picture[:, :, 0] == 255) & (picture[:, :, 1] == 0) & (picture[:, :, 2] == 0))
    assert len(ys) and ys.max() - ys.min() == side + 1 and xs.max() - xs.min() == side + 1
    inside = picture[ys.min() + 1:ys.max(), xs.min() + 1:xs.max(), 0]
    np.testing.assert_allclose(inside[::4, ::4], centre, atol=1)
    np.testing.assert_allclose(inside[1::4, 3::4], centre, atol=1)  # upscaled x4 by repetition


def test_command_errors_are_one_line_and_write_nothing(tiny_run, tmp_path):
    base = ["arithmetic", str(tiny_run / "last.pt"), "--concept", "smiling_woman=12,40,77", "--concept",
            "neutral_woman=3,8,91", "--out", str(tmp_path / "x"), "--device", "cpu"]
    for extra, message in [(["--expr", "smilng_woman - neutral_woman"], "unknown concept 'smilng_woman'"),
                           (["--expr", "smiling_woman - + neutral_woman"], "unexpected '+' at position 17"),
                           (["--expr", "smiling_woman", "--concept", "x=140"],
                            "index 140 of concept x is outside the bank of 100 (0..99)"),
                           (["--expr", "smiling_woman", "--concept", "x:1,2"], "--concept 'x:1,2': expected")]:
        result = CliRunner().invoke(_cli(), base + extra)
        assert result.exit_code == 1 and result.output.startswith("Error: ") and message in result.output
        assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_page_escapes_hostile_text():
    html = arithmetic.page(expression="<script>alert(1)</script>", combination="+1 <b>", concepts=[
        {"name": "<img src=x onerror=alert(2)>", "indices": "1, 2", "coefficient": "+1"}],
        notes=["</p><script>x</script>"], checkpoint="<ck>", seed=0, bank=10, noise=0.25,
        arithmetic_png=b"\x89PNG", bank_png=b"\x89PNG")
    assert "<script" not in html and "<img src=x" not in html and "<ck>" not in html and "<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img src=x onerror=alert(2)&gt;" in html


def _table(result, prefix):
    return next(t for t in result.tables if t.title.startswith(prefix))


def _recomputed_match_rate(rows):
    hits = judged = 0
    for _, _, expected, centre, neighbours, matches in rows:
        if expected == "-":
            continue
        reading = [centre] + neighbours.split(", ")
        assert matches == f"{sum(r == expected for r in reading)}/9"
        hits, judged = hits + sum(r == expected for r in reading), judged + 9
    return hits / judged


def test_report_section_on_the_digits_run(tiny_run, tmp_path):
    registry.reset()  # vector-arithmetic is a built-in: it loads through its entry point
    try:
        data, _ = make_report(tiny_run / "last.pt", only=["vector-arithmetic"], out=tmp_path / "r", device="cpu",
                              progress=False, settings={"vector-arithmetic.train_limit": "300"})
    finally:
        registry.reset()
    run = data.components[0]
    assert run.status == "ok", run.error
    result = run.result
    rate = result.metrics["match_rate"]
    assert 0 <= rate <= 1 and 0.8 < result.metrics["classifier_heldout_accuracy"] <= 1
    rows = _table(result, "expressions").rows
    assert rows and rate == pytest.approx(_recomputed_match_rate(rows))
    judged = result.metrics["images_judged"]
    assert judged == 9 * sum(row[2] != "-" for row in rows)
    assert result.verdict == (f"{round(rate * judged)} of {judged} results and noise neighbours ({rate:.1%}) of the "
                              "expressions that reduce to one class are read as that class, against about 10% by "
                              "chance (the classifier reads "
                              f"{result.metrics['classifier_heldout_accuracy']:.1%} of held-out images right)")

    # independently: the same classifier recipe on the same 300 images, applied to the bank and to the results
    gan = ganlab.load(tiny_run / "last.pt", "cpu")
    images, labels = ganlab.load_split("digits", "train", image_size=16, channels=1, limit=300, progress=False)
    clf = make_pipeline(PCA(50, random_state=0), LogisticRegression(C=1.0, max_iter=1000))
    clf.fit(images.reshape(300, -1).numpy() / 255.0, labels.numpy())
    z = ax.make_bank(gan.config, 256, 0)

    def read(zs):
        with torch.no_grad():
            u8 = ((gan.generator(zs) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return clf.predict_proba(u8.reshape(len(u8), -1).numpy() / 255.0)

    probs = read(z)
    concepts = _table(result, "concepts").rows
    assert concepts
    for _, label, indices, _ in concepts:
        indices = [int(i) for i in indices.split(", ")]
        assert len(indices) == 3 and (probs[indices].argmax(1) == label).all()
        others = [i for i in range(256) if probs[i].argmax() == label and i not in indices]
        assert all(probs[i, label] <= probs[indices, label].min() + 1e-9 for i in others)  # the most confident 3
    by_name = {name: [int(i) for i in idx.split(", ")] for name, _, idx, _ in concepts}
    for _, _, expected, centre, _, _ in rows:
        if expected != "-":  # reduces to one concept: its result is that concept's mean z
            label = read(z[by_name[expected]].mean(0, keepdim=True)).argmax(1)[0]
            assert centre == f"class_{label}"


class Lookup(torch.nn.Module):
    """A 'generator' whose image is the class-mean real digit picked by argmax(W z): labels known in advance."""

    def __init__(self, W, prototypes):
        super().__init__()
        self.W, self.prototypes = W, prototypes

    def forward(self, z):
        return self.prototypes[(z.flatten(1) @ self.W.T).argmax(1)]


def test_report_section_with_every_class_present(tmp_path):
    images, labels = ganlab.load_split("digits", "train", image_size=16, channels=1, limit=400, progress=False)
    prototypes = torch.stack([images[labels == c].float().mean(0) / 127.5 - 1 for c in range(10)])
    W = torch.randn(10, 16, generator=torch.Generator().manual_seed(0))
    config = ModelConfig(image_size=16, channels=1, nz=16, ngf=8, ndf=8)
    gan = LoadedGAN(config, Lookup(W, prototypes), None, Path("<memory>"), {})
    source = ganlab.dataset_source("digits")
    defaults = {name: option.default for name, option in arithmetic.VectorArithmetic.options.items()}
    options = {**defaults, "train_limit": 400}
    ctx = RunContext(gan=gan, device=torch.device("cpu"), seed=0, options=options,
                     dataset="digits", source=source, layout=source.layout(), quiet=True)
    result = arithmetic.VectorArithmetic().run(ctx)
    bank_class = (ax.make_bank(config, 256, 0).flatten(1) @ W.T).argmax(1)
    concepts = _table(result, "concepts").rows
    assert len(concepts) == 10 and result.metrics["concepts"] == 10
    for name, label, indices, _ in concepts:  # each concept's samples show its class's prototype
        assert name == f"class_{label}" and all(bank_class[int(i)] == label for i in indices.split(", "))
    rows = _table(result, "expressions").rows
    assert sum(row[2] != "-" for row in rows) == 20 and sum(row[2] == "-" for row in rows) == 3
    for expression, coefficients, expected, centre, _, _ in rows:
        a, b, c = expression.replace("-", "+").split(" + ")
        if a == b:
            assert expected == c and coefficients == f"+0 {a} +1 {c}"
        elif b == c:
            assert expected == a and coefficients == f"+1 {a} +0 {b}"
        else:
            assert expected == "-" and coefficients == f"+1 {a} -1 {b} +1 {c}"
        # a mean of z's that all pick prototype d picks d too (argmax of a linear map), so the result reads as d
        if expected != "-":
            assert centre == expected
    rate = result.metrics["match_rate"]
    assert rate == pytest.approx(_recomputed_match_rate(rows)) and 0.5 < rate <= 1


def test_discriminator_features_classifier(tiny_run, tmp_path):
    from sklearn.preprocessing import StandardScaler

    registry.reset()  # vector-arithmetic is a built-in: it loads through its entry point
    try:
        data, _ = make_report(tiny_run / "last.pt", only=["vector-arithmetic"], out=tmp_path / "r", device="cpu",
                              progress=False, settings={"vector-arithmetic.train_limit": "200",
                                                        "vector-arithmetic.classifier": "discriminator"})
    finally:
        registry.reset()
    result = data.components[0].result
    assert "D's pooled features" in result.text[0] and 0 <= result.metrics["match_rate"] <= 1
    # its held-out accuracy, recomputed: standardised D features -> PCA(50) -> logistic regression
    D = ganlab.load(tiny_run / "last.pt", "cpu").discriminator
    x, y = ganlab.load_split("digits", "train", image_size=16, channels=1, limit=200, progress=False)
    xt, yt = ganlab.load_split("digits", "test", image_size=16, channels=1, limit=200, progress=False)
    clf = make_pipeline(StandardScaler(), PCA(50, random_state=0), LogisticRegression(C=1.0, max_iter=1000))
    clf.fit(ganlab.discriminator_features(D, x), y.numpy())
    want = clf.score(ganlab.discriminator_features(D, xt), yt.numpy())
    assert result.metrics["classifier_heldout_accuracy"] == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("name, value, message", [("classifier", "svm", "choose one of pixels, discriminator"),
                                                  ("bank", "0", "must be >= 1"), ("noise", "-1.0", "must be >= 0")])
def test_out_of_range_options_are_refused_before_anything_runs(tiny_run, tmp_path, name, value, message):
    registry.reset()
    try:
        with pytest.raises(GanlabError, match=f"vector-arithmetic.{name}={value}: {message}"):
            make_report(tiny_run / "last.pt", only=["vector-arithmetic"], out=tmp_path / "r", device="cpu",
                        progress=False, settings={f"vector-arithmetic.{name}": value})
    finally:
        registry.reset()
