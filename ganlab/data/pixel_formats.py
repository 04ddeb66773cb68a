"""Pixel formats: any decoded image or array becomes 8-bit grey ('L') or RGB, scaled or refused, never clipped.

The rules of ``to_8bit`` (PIL images), ``array_to_8bit`` and ``values_to_8bit`` (H x W or H x W x C arrays, C = 1,
2 (grey + alpha), 3 or 4 (RGBA)), rounding half up where they scale; a refusal is a ``BadImageError``:
- 'L', 'RGB' and uint8 are kept; '1' and bool become 0 / 255; other integer arrays must lie in 0..255.
- 16-bit grey ('I;16*', and 'I' read from a PNG or a PGM) is scaled by 255 / 65535 (PIL's ``convert("L")`` would
  clip it); any other 'I' (32-bit) must lie in 0..65535: kept when at most 255, else scaled as 16-bit.
- Floats: NaN and infinity refused; all in [0, 1] scaled by 255; all in [0, 255] kept; anything else refused.
- Alpha is dropped, colours kept as stored; palettes, 'CMYK', 'YCbCr', 'HSV' and 'LAB' go through PIL's conversion
  to RGB; any other mode is refused.
"""
import numpy as np
from PIL import Image

from ganlab.errors import GanlabError

SKIP_HINT = "give --skip-bad-images to skip unreadable files"

_WIDE_INT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")
SIXTEEN_BIT_FORMATS = ("PNG", "PPM")  # whose 'I' is always 16-bit: PIL puts a PGM's maxval on that scale
_CONVERTED = {"1": "L", "LA": "L", "La": "L", "RGBA": "RGB", "RGBa": "RGB", "RGBX": "RGB", "P": "RGB", "PA": "RGB",
              "CMYK": "RGB", "YCbCr": "RGB", "HSV": "RGB", "LAB": "RGB"}


def one_line(text: object) -> str:
    """``text`` on one line; an OSError as its strerror alone, since the message names the path already."""
    return getattr(text, "strerror", None) or " ".join(str(text).split())


def error_text(exc: BaseException) -> str:
    """``"TypeName: message"`` on one line, for errors from libraries whose type says what went wrong."""
    return f"{type(exc).__name__}: {one_line(exc)}"


def printable(where: object) -> str:
    """A path or name on one line (a newline in a file name would break the one-line error)."""
    return str(where).replace("\r", "\\r").replace("\n", "\\n")


class BadImageError(GanlabError):
    """One image cannot be used. ``reason`` is ``"WHERE: PROBLEM"``; the message adds how to skip such files."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"{reason}; {SKIP_HINT}")

    def __reduce__(self):  # rebuilt from the reason, so a pickled copy keeps one hint
        return (type(self), (self.reason,))


def bad_image(where: object, problem: str) -> BadImageError:
    return BadImageError(f"{printable(where)}: {problem}")


def _range(array: np.ndarray) -> tuple:
    return (array.min().item(), array.max().item()) if array.size else (0, 0)


def _round_half_up(values: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(np.floor(values.astype(np.float64) * scale + 0.5), 0, 255).astype(np.uint8)


def array_to_8bit(array: np.ndarray, where: object) -> np.ndarray:
    """uint8 H x W (grey) or H x W x 3 (RGB) from an array of the shapes and dtypes in the module docstring."""
    channels = array.shape[2] if array.ndim == 3 else None
    if channels in (1, 2, 4):
        array = array[:, :, :3] if channels == 4 else array[:, :, 0]
    elif array.ndim != 2 and channels != 3:
        raise bad_image(where, f"array of shape {tuple(array.shape)} is not an image; expected H x W or H x W x C "
                               "with C = 1, 3 or 4")
    if 0 in array.shape[:2]:
        raise bad_image(where, f"array of shape {tuple(array.shape)} has no pixels")
    return values_to_8bit(array, where)


def values_to_8bit(array: np.ndarray, where: object) -> np.ndarray:
    """uint8 values from an array of any shape, by the value rules in the module docstring."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        low, high = _range(array)
        if low < 0 or high > 255:
            raise bad_image(where, f"{array.dtype} pixels range {low}..{high}; expected 0..255")
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.floating):
        raise bad_image(where, f"array of dtype {array.dtype} is not an image; expected integers or floats")
    expected = "expected values in [0, 1] or [0, 255]"
    if not np.isfinite(array).all():
        raise bad_image(where, f"float pixels contain {'NaN' if np.isnan(array).any() else 'infinite values'}; "
                               f"{expected}")
    low, high = _range(array)
    if low < 0 or high > 255:
        raise bad_image(where, f"float pixels range {low:g}..{high:g}; {expected}")
    return _round_half_up(array, 255.0 if high <= 1 else 1.0)


def to_8bit(image: Image.Image, where: object) -> Image.Image:
    """``image`` as an 'L' or 'RGB' image by the rules in the module docstring."""
    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode in _WIDE_INT_MODES:
        array = np.asarray(image)
        low, high = _range(array)
        if low < 0 or high > 65535:
            raise bad_image(where, f"{mode} pixels range {low}..{high}; expected 0..65535")
        keep = mode == "I" and high <= 255 and image.format not in SIXTEEN_BIT_FORMATS  # 8-bit data stored wide
        return Image.fromarray(array.astype(np.uint8) if keep else _round_half_up(array, 255.0 / 65535.0))
    if mode == "F":
        return Image.fromarray(values_to_8bit(np.asarray(image), where))
    if mode not in _CONVERTED:
        raise bad_image(where, f"pixel mode {mode} is not supported; convert it to 8-bit grey or RGB")
    try:
        if mode == "PA" or (mode == "P" and "transparency" in image.info):
            image = image.convert("RGBA")
        return image.convert(_CONVERTED[image.mode])
    except (ValueError, OSError) as exc:
        raise bad_image(where, f"cannot convert pixel mode {mode} to {_CONVERTED[mode]} ({one_line(exc)})") from None
