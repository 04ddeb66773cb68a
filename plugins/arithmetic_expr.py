"""``vector-arithmetic``'s expression language, concepts, seeded bank of z's and pictures.

Expressions are linear: concept names, numbers, ``+ - * /`` and parentheses (``0.5*(a + b) - c``), read by
Python's ``ast`` and a walk that accepts only those; nothing is evaluated. A sign may only open the expression or
follow ``(``; two concepts never multiply, and a number is never added to a concept. Positions count from 1.
"""
import ast
import keyword
import math
import re
import sys
import warnings

from ganlab import GanlabError

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
CHARACTER = re.compile(r"[A-Za-z0-9_\s.+\-*/()]")
OPERATORS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
HINT = "use concept names, numbers, + - * / and parentheses"
BANK_CHUNK = 64  # the bank is drawn in chunks of this many, so index i does not depend on the bank's size
EXEMPLARS = 3  # the paper averages 3 samples per concept: single samples were unstable
MAX_DEPTH = 100  # parentheses; far deeper ones would exhaust Python's parser


def is_concept_name(name: str) -> bool:
    return bool(NAME.match(name)) and not keyword.iskeyword(name)


def _scan(text: str) -> None:
    """Refusals a pass over the characters words better than ``ast``: a foreign character, a doubled sign,
    unbalanced or too deeply nested parentheses."""
    open_at, previous = [], "("
    for position, char in enumerate(text, 1):
        if not CHARACTER.fullmatch(char):
            raise GanlabError(f"unexpected character {char!r} at position {position} in --expr: {HINT}")
        if char in "+-" and previous in "+-*/":
            raise GanlabError(f"unexpected {char!r} at position {position} in --expr: a sign may only open the "
                              "expression or follow '(' (write a - b, not a + -b)")
        if char == "(":
            open_at.append(position)
            if len(open_at) > MAX_DEPTH:
                raise GanlabError(f"--expr is nested more than {MAX_DEPTH} parentheses deep; write it flatter")
        elif char == ")":
            if not open_at:
                raise GanlabError(f"unexpected ')' at position {position} in --expr: no '(' is open")
            open_at.pop()
        previous = previous if char.isspace() else char
    if open_at:
        raise GanlabError(f"missing ')' for the '(' at position {open_at[-1]} in --expr")


def _syntax_error(text: str, exc: SyntaxError) -> GanlabError:
    end = len(text.rstrip())
    position = max(1, (exc.offset or 1) - 1)  # Python counts in the parenthesised text
    if position > end:
        return GanlabError(f"--expr ends after {text.rstrip()[-1]!r} at position {end}: expected a concept name, "
                           "a number or '('")
    span = text[position - 1:max(position, (exc.end_offset or 0) - 1)].strip()
    return GanlabError(f"cannot read --expr at position {position} ({span!r}: {exc.msg.split('. ')[0]}): {HINT}")


def _scaled(value, factor: float):
    return {name: c * factor for name, c in value.items()} if isinstance(value, dict) else value * factor


def _apply(node, left, right, flat: str):
    op = OPERATORS[type(node.op)]
    at = f"at position {len(flat) - len(flat[node.left.end_col_offset:].lstrip(' )'))} in --expr"
    left_is, right_is = isinstance(left, dict), isinstance(right, dict)
    if op in "+-":
        if left_is != right_is:
            raise GanlabError(f"cannot add a number and a concept with {op!r} {at}: scale concepts instead "
                              "(0.5*a, not a + 0.5)")
        sign = 1.0 if op == "+" else -1.0
        if not left_is:
            return left + sign * right
        return {**left, **{name: left.get(name, 0.0) + sign * c for name, c in right.items()}}
    left_text, right_text = (flat[side.col_offset:side.end_col_offset] for side in (node.left, node.right))
    if op == "*" and left_is and right_is:
        raise GanlabError(f"cannot multiply {left_text!r} by {right_text!r} {at}: only numbers scale concepts")
    if op == "*":
        return _scaled(right, left) if right_is else _scaled(left, right)
    if right_is:
        raise GanlabError(f"cannot divide by {right_text!r} {at}: only numbers divide")
    if right == 0:
        raise GanlabError(f"division by zero {at}")
    return _scaled(left, 1.0 / right)


def _value(node, flat: str, concepts: list[str]):
    """A node's number (float) or combination of concepts (dict name -> coefficient)."""
    at = f"at position {node.col_offset} in --expr"  # flat's index = text's position counted from 1
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        if abs(node.value) > sys.float_info.max:  # an int too large for a float, or a float literal read as inf
            raise GanlabError(f"number {flat[node.col_offset:node.end_col_offset]!r} {at} is too large")
        return float(node.value)
    if isinstance(node, ast.Name):
        if node.id not in concepts:
            raise GanlabError(f"unknown concept {node.id!r} {at}; concepts: "
                              f"{', '.join(concepts) or 'none (give --concept NAME=I,J,K)'}")
        return {node.id: 1.0}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        return _scaled(_value(node.operand, flat, concepts), -1.0 if isinstance(node.op, ast.USub) else 1.0)
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        return _apply(node, _value(node.left, flat, concepts), _value(node.right, flat, concepts), flat)
    raise GanlabError(f"unexpected {flat[node.col_offset:node.end_col_offset]!r} {at}: {HINT}")


def parse_expression(text: str, concepts) -> dict[str, float]:
    """Net coefficient of each concept named in ``text``, in order of first appearance."""
    concepts = list(concepts)
    if not text or not text.strip():
        raise GanlabError("--expr is empty: write concept names joined by + and -, e.g. 'a - b + c'")
    _scan(text)
    flat = "(" + re.sub(r"\s", " ", text) + ")"  # one line, and leading spaces are no indentation
    try:
        with warnings.catch_warnings():  # Python's hints about literals ("1 is a") are not ours to print
            warnings.simplefilter("ignore")
            tree = ast.parse(flat, mode="eval")
        value = _value(tree.body, flat, concepts)
    except SyntaxError as exc:
        raise _syntax_error(text, exc) from None
    except (RecursionError, MemoryError):  # a chain of thousands of terms
        raise GanlabError("--expr is too long to read; write it shorter") from None
    if not isinstance(value, dict):
        raise GanlabError(f"--expr {text.strip()!r} names no concept; concepts: {', '.join(concepts) or 'none'}")
    wild = [name for name, c in value.items() if not math.isfinite(c)]
    if wild:
        raise GanlabError(f"--expr gives {wild[0]} the coefficient {value[wild[0]]}: the numbers overflow a float; "
                          "use smaller ones")
    return value


def expected_concept(coeffs: dict[str, float]) -> str | None:
    """The one concept the combination reduces to (coefficient 1, all others 0), e.g. a - a + c -> c; else None."""
    nonzero = [name for name, c in coeffs.items() if c != 0]
    return nonzero[0] if len(nonzero) == 1 and coeffs[nonzero[0]] == 1 else None


def format_coeffs(coeffs: dict[str, float]) -> str:
    """{'a': 1, 'b': -1, 'c': 0.5} -> '+1 a -1 b +0.5 c'."""
    return " ".join(f"{c:+g} {name}" for name, c in coeffs.items()) or "0"


def parse_concept(text: str) -> tuple[str, list[int]]:
    """'smiling_woman=12,40,77' -> ('smiling_woman', [12, 40, 77])."""
    name, sep, rest = (part.strip() for part in text.partition("="))
    if not sep:
        raise GanlabError(f"--concept {text!r}: expected NAME=I,J,K with bank indices, e.g. smiling_woman=12,40,77")
    if not is_concept_name(name):
        raise GanlabError(f"--concept {text!r}: the name {name!r} must be letters, digits and underscores, "
                          "not starting with a digit, and not a Python keyword")
    if not rest:
        raise GanlabError(f"--concept {text!r} has no indices: give bank indices, e.g. {name}=12,40,77")
    indices = []
    for part in (p.strip() for p in rest.split(",")):
        if not (part.isascii() and part.isdigit()):
            raise GanlabError(f"--concept {text!r}: {part!r} is not a bank index (a whole number from 0; "
                              "separate indices with commas)")
        if int(part) in indices:
            raise GanlabError(f"--concept {text!r}: index {int(part)} is given twice")
        indices.append(int(part))
    return name, indices


def parse_concepts(texts, bank: int) -> dict[str, list[int]]:
    concepts: dict[str, list[int]] = {}
    for text in texts:
        name, indices = parse_concept(text)
        if name in concepts:
            raise GanlabError(f"--concept {name} is given twice; give each concept once")
        outside = [i for i in indices if i >= bank]
        if outside:
            raise GanlabError(f"index {outside[0]} of concept {name} is outside the bank of {bank} (0..{bank - 1}); "
                              f"pick from bank.png or give --bank {outside[0] + 1} or more")
        concepts[name] = indices
    if not concepts:
        raise GanlabError("give at least one --concept NAME=I,J,K")
    return concepts


def make_bank(config, n: int, seed: int):
    """n latent vectors (n x nz x 1 x 1): index i is the same z for the same seed and config, whatever n is."""
    import torch

    from ganlab import sample_latent

    gen = torch.Generator().manual_seed(seed)
    return torch.cat([sample_latent(config, BANK_CHUNK, gen) for _ in range(math.ceil(n / BANK_CHUNK))])[:n]


def concept_means(bank, concepts: dict[str, list[int]]) -> dict:
    return {name: bank[indices].mean(0) for name, indices in concepts.items()}


def combine(coeffs: dict[str, float], means: dict):
    """Accumulated in the expression's order, so that a - a + b is b exactly."""
    return sum(c * means[name] for name, c in coeffs.items())


def neighbourhood(vector, count: int, scale: float, seed: int):
    """(1 + count) x nz x 1 x 1: the vector, then ``count`` copies plus uniform noise in [-scale, scale]."""
    import torch

    noise = (torch.rand((count, *vector.shape), generator=torch.Generator().manual_seed(seed)) * 2 - 1) * scale
    return torch.cat([vector[None], vector[None] + noise])


# ---- pictures: uint8 C x H x W images, each scaled (nearest) to a cell of at least 64 pixels ----------------

def _font(size: int = 13):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def _cell(image_uint8, side: int):
    from PIL import Image as PILImage
    from torchvision.transforms.functional import to_pil_image

    return to_pil_image(image_uint8).convert("RGB").resize((side, side), PILImage.NEAREST)


def cell_side(image_size: int) -> int:
    return image_size * max(1, math.ceil(64 / image_size))


def numbered_grid(images_uint8, labels: list[str] | None = None):
    """A PIL image of the images in a grid, each under a strip with its index (or ``labels[i]``)."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    n, side, font, strip, gap = len(images_uint8), cell_side(images_uint8.shape[-1]), _font(), 16, 4
    columns = min(20, math.ceil(math.sqrt(n)))
    canvas = PILImage.new("RGB", (gap + columns * (side + gap), gap + math.ceil(n / columns) * (side + strip + gap)),
                          "white")
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
    canvas = PILImage.new("RGB", (width, gap + line + len(rows) * (side + gap) + line + 3 * (side + 2) + gap), "white")
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
    # block index per 3x3 position: the result (0) in the centre
    for position, index in enumerate([1, 2, 3, 4, 0, 5, 6, 7, 8]):
        canvas.paste(_cell(block_uint8[index], side), (label_w + (position % 3) * (side + 2),
                                                       y + (position // 3) * (side + 2)))
    draw.rectangle((label_w + side + 1, y + side + 1, label_w + 2 * side + 2, y + 2 * side + 2), outline="red")
    return canvas
