"""Pixel formats: any decoded image or array becomes 8-bit grey ('L') or RGB, scaled or refused, never clipped.

The rules (``to_8bit`` for PIL images, ``array_to_8bit`` for numpy arrays):

- 'L' and 'RGB' are kept as they are; '1' (1-bit) becomes 0 / 255.
- 'I;16', 'I;16L', 'I;16B', 'I;16N' (unsigned 16-bit, how Pillow opens a 16-bit grey PNG or TIFF) are scaled
  by the type's full range: ``v * 255 / 65535``. (PIL's own ``convert("L")`` would clip everything above
  255 to white.) 16-bit colour PNGs never get here: Pillow opens them as 8-bit 'RGB'/'RGBA' itself,
  keeping the high byte (``v // 256``), which is scaled, not clipped.
- 'I' (32-bit signed integers, how older Pillows open 16-bit PNGs and how 32-bit TIFFs open): values must
  lie in 0..65535. When the largest is at most 255 the values are kept (8-bit data stored wide), otherwise
  they are scaled as 16-bit (``v * 255 / 65535``). Negative values or values above 65535 are refused.
- 'F' (32-bit float): NaN or infinity is refused; values all in [0, 1] are scaled by 255; values all in
  [0, 255] are kept; anything else (negative, above 255) is refused, naming the range found.
- Alpha is dropped, the colour channels kept as stored ('LA' -> 'L', 'RGBA'/'RGBa'/'RGBX' -> 'RGB').
- 'P' (palette) becomes RGB through its palette ('PA', or 'P' with a transparent colour, through RGBA
  and the alpha dropped); 'CMYK', 'YCbCr', 'HSV' and 'LAB' use PIL's conversion to RGB.
- Any other mode is refused.

Scaled values are rounded half up (``floor(x + 0.5)``): 0.5 -> 128 in a float image, 32768 -> 128 in a
16-bit one (``np.round`` gives the same for both). Numpy arrays follow the same value rules by dtype:
uint8 kept; bool -> 0 / 255; other integers kept when within 0..255 and refused otherwise; floats as 'F'
above; an array is H x W, or H x W x C with C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA).

A refusal is a :class:`BadImageError` naming the file (or item) and what was found.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from ganlab.errors import GanlabError

SKIP_HINT = "give --skip-bad-images to skip unreadable files"

_UINT16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_DROPPED = {"LA": "L", "La": "L", "RGBA": "RGB", "RGBa": "RGB", "RGBX": "RGB"}
_TO_RGB = ("CMYK", "YCbCr", "HSV", "LAB")


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def printable(where: object) -> str:
    """A path or name on one line (a newline in a file name would break the one-line error)."""
    return str(where).replace("\r", "\\r").replace("\n", "\\n")


class BadImageError(GanlabError):
    """One image cannot be used (unreadable, corrupt, or pixel values ganlab will not guess at).

    ``reason`` is ``"WHERE: PROBLEM"``; the message adds how to skip such files. ``load_split(skip_bad=True)``
    drops the images that raise this instead of stopping.
    """

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"{reason}; {SKIP_HINT}")

    def __reduce__(self):  # rebuilt from the reason, so a pickled copy keeps one hint
        return (type(self), (self.reason,))


def bad_image(where: object, problem: str) -> BadImageError:
    return BadImageError(f"{printable(where)}: {problem}")


def _value_range(array: np.ndarray) -> str:
    return f"{array.min():g}..{array.max():g}" if array.size else "empty"


def _round_half_up(values: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(np.floor(values.astype(np.float64) * scale + 0.5), 0, 255).astype(np.uint8)


def _float_to_8bit(array: np.ndarray, where: object) -> np.ndarray:
    if array.size and not np.isfinite(array).all():
        bad = "NaN" if np.isnan(array).any() else "infinite values"
        raise bad_image(where, f"float pixels contain {bad}; expected values in [0, 1] or [0, 255]")
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if low >= 0 and high <= 1:
        return _round_half_up(array, 255.0)
    if low >= 0 and high <= 255:
        return _round_half_up(array, 1.0)
    raise bad_image(where, f"float pixels range {low:g}..{high:g}; expected values in [0, 1] or [0, 255]")


def _int_to_8bit(array: np.ndarray, where: object, what: str) -> np.ndarray:
    if array.size and (int(array.min()) < 0 or int(array.max()) > 255):
        raise bad_image(where, f"{what} pixels range {_value_range(array)}; expected 0..255")
    return array.astype(np.uint8)


def _wide_int_to_8bit(array: np.ndarray, where: object, mode: str) -> np.ndarray:
    """'I;16*' scaled by 65535; 'I' kept when at most 255, scaled as 16-bit up to 65535, refused beyond."""
    low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
    if low < 0 or high > 65535:
        raise bad_image(where, f"{mode} pixels range {low}..{high}; expected 0..65535")
    if mode == "I" and high <= 255:
        return array.astype(np.uint8)
    return _round_half_up(array, 255.0 / 65535.0)


def array_to_8bit(array: np.ndarray, where: object) -> np.ndarray:
    """uint8 H x W (grey) or H x W x 3 (RGB) from an array of the shapes and dtypes in the module docstring."""
    if array.ndim == 3 and array.shape[2] in (1, 2):
        array = array[:, :, 0]
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    elif not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise bad_image(where, f"array of shape {tuple(array.shape)} is not an image; expected H x W or H x W x C "
                               "with C = 1, 3 or 4")
    return values_to_8bit(array, where)


def values_to_8bit(array: np.ndarray, where: object) -> np.ndarray:
    """uint8 values from an array of any shape, by the value rules in the module docstring (one rule for all)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        return _int_to_8bit(array, where, str(array.dtype))
    if np.issubdtype(array.dtype, np.floating):
        return _float_to_8bit(array, where)
    raise bad_image(where, f"array of dtype {array.dtype} is not an image; expected integers or floats")


def to_8bit(image: Image.Image, where: object) -> Image.Image:
    """``image`` as an 'L' or 'RGB' image by the rules in the module docstring."""
    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode in _UINT16_MODES or mode == "I":
        return Image.fromarray(_wide_int_to_8bit(np.asarray(image), where, mode))
    if mode == "F":
        return Image.fromarray(_float_to_8bit(np.asarray(image), where))
    if mode in _ALPHA_DROPPED:
        return image.convert(_ALPHA_DROPPED[mode])
    if mode == "PA" or (mode == "P" and "transparency" in image.info):
        return image.convert("RGBA").convert("RGB")
    if mode == "P" or mode in _TO_RGB:
        try:
            return image.convert("RGB")
        except (ValueError, OSError) as exc:
            raise bad_image(where, f"cannot convert pixel mode {mode} to RGB ({one_line(exc)})") from None
    raise bad_image(where, f"pixel mode {mode} is not supported; convert it to 8-bit grey or RGB")
