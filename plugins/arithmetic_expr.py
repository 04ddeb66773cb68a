"""The parts of ``vector-arithmetic`` / ``ganlab arithmetic`` that are not a component: concepts, the seeded bank
of latent vectors, the expression parser (no ``eval``), and the pictures (figure-7 layout, numbered bank grid).

Expressions are linear: concept names, numbers, ``+``, ``-``, ``*``, ``/`` and parentheses, e.g.
``smiling_woman - neutral_woman + neutral_man`` or ``0.5*(a + b) - c``. A sign may only open the expression or
follow ``(`` (``a + -b`` is refused as a doubled operator; write ``a - b``). Numbers scale concepts; two concepts
never multiply, and a bare number is never added to a concept. Positions in messages count characters from 1.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ganlab import GanlabError

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_TOKEN = re.compile(r"\s*(?:(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
                    r"|(?P<op>[-+*/()]))")
BANK_CHUNK = 64  # the bank is drawn in chunks of this many, so index i does not depend on the bank's size
EXEMPLARS = 3  # the paper averages 3 samples per concept: single samples were unstable
MAX_DEPTH = 100  # parentheses; deeper would exhaust Python's recursion limit


@dataclass(frozen=True)
class Token:
    kind: str  # "number", "name", "op" or "end"
    text: str
    pos: int  # 1-based character position


def tokenize(text: str, where: str = "--expr") -> list[Token]:
    """Tokens of ``text`` ending with an "end" token; a character outside the grammar is a GanlabError."""
    tokens, i = [], 0
    while i < len(text):
        if text[i:].strip() == "":
            break
        match = _TOKEN.match(text, i)
        if match is None or match.lastgroup is None:
            j = i + len(text[i:]) - len(text[i:].lstrip())
            raise GanlabError(f"unexpected character {text[j]!r} at position {j + 1} in {where}: use concept names, "
                              "numbers, + - * / and parentheses")
        tokens.append(Token(match.lastgroup, match.group(match.lastgroup), match.start(match.lastgroup) + 1))
        i = match.end()
    tokens.append(Token("end", "", len(text) + 1))
    return tokens


class _Value:
    """A number (``coeffs`` None) or a linear combination of concepts (name -> coefficient)."""

    def __init__(self, number: float = 0.0, coeffs: dict[str, float] | None = None, label: str = ""):
        self.number, self.coeffs, self.label = number, coeffs, label

    @property
    def is_vector(self) -> bool:
        return self.coeffs is not None

    def scaled(self, factor: float) -> _Value:
        if self.coeffs is None:
            return _Value(self.number * factor)
        return _Value(coeffs={k: v * factor for k, v in self.coeffs.items()}, label=self.label)


class _Parser:
    """Recursive descent over: expr := [sign] term (('+'|'-') term)*; term := primary (('*'|'/') primary)*;
    primary := NUMBER | NAME | '(' expr ')'."""

    def __init__(self, text: str, concepts: list[str], where: str):
        self.tokens, self.i, self.where = tokenize(text, where), 0, where
        self.concepts, self.depth = concepts, 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def fail(self, expected: str):
        tok = self.tok
        if tok.kind == "end":
            last = self.tokens[self.i - 1]
            raise GanlabError(f"{self.where} ends after {last.text!r} at position {last.pos}: expected {expected}")
        raise GanlabError(f"unexpected {tok.text!r} at position {tok.pos} in {self.where}: expected {expected}")

    def expression(self) -> _Value:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise GanlabError(f"{self.where} is nested more than {MAX_DEPTH} parentheses deep; write it flatter")
        sign = 1.0
        if self.tok.text in "+-" and self.tok.kind == "op":
            sign = -1.0 if self.tok.text == "-" else 1.0
            self.i += 1
        value = self.term().scaled(sign)
        while self.tok.kind == "op" and self.tok.text in "+-":
            op = self.tok
            self.i += 1
            right = self.term()
            if value.is_vector != right.is_vector:
                raise GanlabError(f"cannot add a number and a concept with {op.text!r} at position {op.pos} in "
                                  f"{self.where}: scale concepts instead (0.5*a, not a + 0.5)")
            factor = 1.0 if op.text == "+" else -1.0
            if value.coeffs is None:
                value = _Value(value.number + factor * right.number)
            else:
                coeffs = dict(value.coeffs)
                for name, c in right.coeffs.items():
                    coeffs[name] = coeffs.get(name, 0.0) + factor * c
                value = _Value(coeffs=coeffs)
        self.depth -= 1
        return value

    def term(self) -> _Value:
        value = self.primary()
        while self.tok.kind == "op" and self.tok.text in "*/":
            op = self.tok
            self.i += 1
            right = self.primary()
            if op.text == "*" and value.is_vector and right.is_vector:
                raise GanlabError(f"cannot multiply {value.label or 'a concept'} by {right.label or 'a concept'} "
                                  f"at position {op.pos} in {self.where}: only numbers scale concepts")
            if op.text == "/":
                if right.is_vector:
                    raise GanlabError(f"cannot divide by {right.label or 'a concept'} at position {op.pos} in "
                                      f"{self.where}: only numbers divide")
                if right.number == 0:
                    raise GanlabError(f"division by zero at position {op.pos} in {self.where}")
                value = value.scaled(1.0 / right.number)
            else:
                value = right.scaled(value.number) if right.is_vector else value.scaled(right.number)
        return value

    def primary(self) -> _Value:
        tok = self.tok
        if tok.kind == "number":
            number = float(tok.text)
            if not math.isfinite(number):
                raise GanlabError(f"number {tok.text!r} at position {tok.pos} in {self.where} is too large")
            self.i += 1
            return _Value(number)
        if tok.kind == "name":
            if tok.text not in self.concepts:
                raise GanlabError(f"unknown concept {tok.text!r} at position {tok.pos} in {self.where}; concepts: "
                                  f"{', '.join(self.concepts) or 'none (give --concept NAME=I,J,K)'}")
            self.i += 1
            return _Value(coeffs={tok.text: 1.0}, label=f"concept {tok.text!r}")
        if tok.kind == "op" and tok.text == "(":
            self.i += 1
            value = self.expression()
            if self.tok.text != ")" or self.tok.kind != "op":
                if self.tok.kind == "end":
                    raise GanlabError(f"missing ')' for the '(' at position {tok.pos} in {self.where}")
                self.fail("an operator or ')'")
            self.i += 1
            return _Value(value.number, value.coeffs)
        self.fail("a concept name, a number or '('")
        raise AssertionError  # pragma: no cover - fail raises


def parse_expression(text: str, concepts, where: str = "--expr") -> dict[str, float]:
    """Net coefficient of each concept named in ``text`` (in order of first appearance); GanlabError if malformed."""
    concepts = list(concepts)
    if not text or not text.strip():
        raise GanlabError(f"{where} is empty: write concept names joined by + and -, e.g. 'a - b + c'")
    parser = _Parser(text, concepts, where)
    value = parser.expression()
    if parser.tok.kind != "end":
        parser.fail("+, -, *, / or the end of the expression")
    if value.coeffs is None:
        raise GanlabError(f"{where} {text.strip()!r} names no concept; concepts: {', '.join(concepts) or 'none'}")
    wild = [name for name, c in value.coeffs.items() if not math.isfinite(c)]
    if wild:
        raise GanlabError(f"{where} gives {wild[0]} the coefficient {value.coeffs[wild[0]]}: the numbers overflow "
                          "a float; use smaller ones")
    return value.coeffs


def expected_concept(coeffs: dict[str, float]) -> str | None:
    """The one concept the combination reduces to (coefficient 1, all others 0), e.g. a - a + c -> c; else None."""
    nonzero = [name for name, c in coeffs.items() if c != 0]
    return nonzero[0] if len(nonzero) == 1 and coeffs[nonzero[0]] == 1 else None


def format_coeffs(coeffs: dict[str, float]) -> str:
    """{'a': 1, 'b': -1, 'c': 0.5} -> '+1 a -1 b +0.5 c'."""
    return " ".join(f"{c:+g} {name}" for name, c in coeffs.items()) or "0"


def parse_concept(text: str) -> tuple[str, list[int]]:
    """'smiling_woman=12,40,77' -> ('smiling_woman', [12, 40, 77]); GanlabError naming what is wrong."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep:
        raise GanlabError(f"--concept {text!r}: expected NAME=I,J,K with bank indices, e.g. smiling_woman=12,40,77")
    if not NAME.match(name):
        raise GanlabError(f"--concept {text!r}: the name {name!r} must be letters, digits and underscores, "
                          "not starting with a digit")
    parts = [p.strip() for p in rest.split(",")]
    if not rest.strip():
        raise GanlabError(f"--concept {text!r} has no indices: give bank indices, e.g. {name}=12,40,77")
    indices = []
    for part in parts:
        if not part.isdigit():
            raise GanlabError(f"--concept {text!r}: {part!r} is not a bank index (a whole number from 0; "
                              "separate indices with commas)")
        if int(part) in indices:
            raise GanlabError(f"--concept {text!r}: index {int(part)} is given twice")
        indices.append(int(part))
    return name, indices


def parse_concepts(texts, bank: int) -> dict[str, list[int]]:
    """Every --concept value, checked against each other and against a bank of ``bank`` samples."""
    concepts: dict[str, list[int]] = {}
    for text in texts:
        name, indices = parse_concept(text)
        if name in concepts:
            raise GanlabError(f"--concept {name} is given twice; give each concept once")
        for index in indices:
            if index >= bank:
                raise GanlabError(f"index {index} of concept {name} is outside the bank of {bank} (0..{bank - 1}); "
                                  f"pick from bank.png or give --bank {index + 1} or more")
        concepts[name] = indices
    if not concepts:
        raise GanlabError("give at least one --concept NAME=I,J,K")
    return concepts


def make_bank(config, n: int, seed: int):
    """n latent vectors (n x nz x 1 x 1): index i is the same z for the same seed and config, whatever n is."""
    import torch

    from ganlab import sample_latent

    gen = torch.Generator().manual_seed(seed)
    chunks = [sample_latent(config, BANK_CHUNK, gen) for _ in range(-(-n // BANK_CHUNK))]
    return torch.cat(chunks)[:n]


def concept_means(bank, concepts: dict[str, list[int]]) -> dict:
    """Concept name -> mean of its exemplars' z (nz x 1 x 1)."""
    return {name: bank[indices].mean(0) for name, indices in concepts.items()}


def combine(coeffs: dict[str, float], means: dict):
    """sum of coefficient x concept mean, accumulated in the expression's order."""
    import torch

    total = torch.zeros_like(next(iter(means.values())))
    for name, c in coeffs.items():
        total = total + c * means[name]
    return total


def neighbourhood(vector, count: int, scale: float, seed: int):
    """(1 + count) x nz x 1 x 1: the vector, then ``count`` copies plus uniform noise in [-scale, scale]."""
    import torch

    noise = (torch.rand((count, *vector.shape), generator=torch.Generator().manual_seed(seed)) * 2 - 1) * scale
    return torch.cat([vector[None], vector[None] + noise])


def generate(generator, z, device, batch: int = 256):
    """G(z) in [-1, 1] on the CPU, in batches, without gradients."""
    import torch

    generator.eval()
    with torch.no_grad():
        images = torch.cat([generator(chunk.to(device)).cpu() for chunk in z.split(batch)])
    bad = int((~torch.isfinite(images)).sum())
    if bad:
        raise GanlabError(f"the generator is broken: {bad} of {images.numel()} output values are NaN or infinite, "
                          "so there is no picture to do arithmetic on")
    return images


def to_uint8(images):
    """G's output in [-1, 1] -> uint8 0..255, the scale of the dataset's images."""
    import torch

    return ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


# ---- pictures ------------------------------------------------------------------------------------------------

def _font(size: int = 13):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def _cell(image_uint8, side: int):
    """One C x H x W uint8 image as an RGB PIL image scaled (nearest) to side x side."""
    from PIL import Image as PILImage

    array = image_uint8.permute(1, 2, 0).numpy()
    picture = PILImage.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    return picture.convert("RGB").resize((side, side), PILImage.NEAREST)


def cell_side(image_size: int) -> int:
    return image_size * max(1, math.ceil(64 / image_size))


def numbered_grid(images_uint8, labels: list[str] | None = None, columns: int | None = None):
    """A PIL image of the images in a grid, each under a strip with its index (or ``labels[i]``)."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    n, side, font, strip, gap = len(images_uint8), cell_side(images_uint8.shape[-1]), _font(), 16, 4
    columns = columns or min(20, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / columns)
    canvas = PILImage.new("RGB", (gap + columns * (side + gap), gap + rows * (side + strip + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        x, y = gap + (i % columns) * (side + gap), gap + (i // columns) * (side + strip + gap)
        draw.text((x + 1, y + 1), labels[i] if labels else str(i), fill="black", font=font)
        canvas.paste(_cell(images_uint8[i], side), (x, y + strip))
    return canvas


def arithmetic_picture(title: str, rows: list[tuple[str, object, object]], block_uint8):
    """The figure-7 layout as a PIL image: per concept its exemplars and their mean's image, then a 3x3 block
    with the result in the centre and its 8 noisy neighbours around it (``block_uint8``: result first)."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    side, font, gap, line = cell_side(block_uint8.shape[-1]), _font(), 6, 18
    measure = ImageDraw.Draw(PILImage.new("RGB", (1, 1)))
    label_w = int(max([measure.textlength(label, font=font) for label, _, _ in rows] + [0])) + 2 * gap
    most = max([len(ex) for _, ex, _ in rows] + [3])
    mean_w = int(measure.textlength("mean", font=font)) + gap
    width = max(label_w + most * (side + 2) + gap + mean_w + side, 3 * (side + 2) + label_w,
                int(measure.textlength(title, font=font))) + 2 * gap
    height = gap + line + len(rows) * (side + gap) + line + 3 * (side + 2) + gap
    canvas = PILImage.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((gap, gap), title, fill="black", font=font)
    y = gap + line
    for label, exemplars, mean in rows:
        draw.text((gap, y + side // 2 - 7), label, fill="black", font=font)
        for k, image in enumerate(exemplars):
            canvas.paste(_cell(image, side), (label_w + k * (side + 2), y))
        x = label_w + most * (side + 2) + gap
        draw.text((x, y + side // 2 - 7), "mean", fill="black", font=font)
        canvas.paste(_cell(mean, side), (x + mean_w, y))
        draw.rectangle((x + mean_w - 1, y - 1, x + mean_w + side, y + side), outline="black")
        y += side + gap
    draw.text((gap, y), f"= result (centre) and {len(block_uint8) - 1} neighbours", fill="black", font=font)
    y += line
    # block index per 3x3 position: the result (0) in the centre when there are 8 neighbours
    order = [1, 2, 3, 4, 0, 5, 6, 7, 8] if len(block_uint8) == 9 else list(range(len(block_uint8)))
    for position, index in enumerate(order):
        x0, y0 = label_w + (position % 3) * (side + 2), y + (position // 3) * (side + 2)
        canvas.paste(_cell(block_uint8[index], side), (x0, y0))
    if len(block_uint8) == 9:
        draw.rectangle((label_w + side + 1, y + side + 1, label_w + 2 * side + 2, y + 2 * side + 2), outline="red")
    return canvas


def pil_to_array(picture):
    """PIL image -> uint8 H x W x 3 numpy array (what ganlab.Image accepts)."""
    import numpy as np

    return np.asarray(picture.convert("RGB"), dtype=np.uint8).copy()
