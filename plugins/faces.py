"""Command ``ganlab faces SRC_DIR OUT_DIR``: crop the faces a detector finds in photos into a training folder, as
the paper built its faces dataset.

Every image under ``SRC_DIR`` (recursively, symlinked folders followed once, hidden names skipped; ``OUT_DIR``
lies outside it) goes to ``--detector``; a detection at least ``--min-size`` pixels wide becomes the square around its
centre, moved inside the image, resized to ``--size`` and written as ``OUT_DIR/NNNNNN_<source name>.png``, an
unlabelled folder dataset. ``OUT_DIR/index.json`` maps each crop to its source, box and square, and lists the
files that could not be decoded (counted and skipped, never fatal).
"""
import json
import os
import re
from pathlib import Path

import click

from ganlab import GanlabError, hookimpl

SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# What the contents may be, whatever the suffix says: never a format whose decoder runs a program (EPS).
FORMATS = ("JPEG", "PNG", "BMP", "WEBP", "TIFF", "GIF", "PPM")
INDEX = "index.json"


def find_images(src: Path) -> list[Path]:
    visited, found = {os.path.realpath(src)}, []

    def refuse(exc: OSError):
        raise GanlabError(f"cannot list {exc.filename} ({exc.strerror or exc})") from None

    for folder, dirs, files in os.walk(src, onerror=refuse, followlinks=True):
        first = {}  # each real folder once: a symlink loop or a folder reached twice is not walked again
        for name in sorted(d for d in dirs if not d.startswith(".")):
            first.setdefault(os.path.realpath(os.path.join(folder, name)), name)
        dirs[:] = [name for real, name in first.items() if real not in visited]
        visited.update(first)
        found += [Path(folder, f) for f in files if not f.startswith(".") and f.lower().endswith(SUFFIXES)]
    return sorted(found)


def read_rgb(path: Path):
    """H x W x 3 uint8, EXIF rotation applied; ``ValueError(reason)`` if it cannot be decoded."""
    import warnings

    import numpy as np
    from PIL import Image, ImageOps

    try:
        if path.stat().st_size == 0:
            raise ValueError("empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=FORMATS) as image:
                image.load()
                return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except ValueError:
        raise
    except Exception as exc:  # PIL raises many types for broken files; each one is a reason to skip the file
        reason = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise ValueError(f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__) from None


def square_crop(box, width: int, height: int) -> tuple[int, int, int]:
    """(x, y, side) of the square around ``box`` = (x, y, w, h)'s centre, moved (or shrunk) to fit the image."""
    x, y, w, h = box
    side = min(max(w, h), width, height)
    left = min(max(round(x + w / 2 - side / 2), 0), width - side)
    top = min(max(round(y + h / 2 - side / 2), 0), height - side)
    return int(left), int(top), int(side)


@click.command("faces")
@click.argument("src_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--min-size", type=click.IntRange(1), default=64, show_default=True,
              help="smallest face kept (detection width in pixels)")
@click.option("--size", type=click.IntRange(8, 1024), default=64, show_default=True, help="side of the crops")
@click.option("--detector", "detector_name", default="haar-face", show_default=True, help="a registered detector")
@click.option("--overwrite", is_flag=True, help="replace the crops of an earlier run in OUT_DIR")
def faces_command(src_dir: Path, out_dir: Path, min_size: int, size: int, detector_name: str, overwrite: bool):
    """Crop the faces found in the photos under SRC_DIR into OUT_DIR, a folder `ganlab train` can read.

    OUT_DIR must be new, empty, or an earlier `ganlab faces` output (replaced with --overwrite), and outside
    SRC_DIR; it is written whole at the end, so a failed or interrupted run leaves nothing half-made."""
    from ganlab import StagedFolder, detector

    find = detector(detector_name)
    earlier = (INDEX, "[0-9]" * 6 + "_*.png")  # an output from before the marker: the index and its crops
    with StagedFolder(out_dir, "faces", sources=[src_dir], flag="OUT_DIR", legacy=earlier) as folder:
        if any(p.name != ".ganlab" for p in folder.out.glob("*")) and not overwrite:
            raise GanlabError(f"{folder.out} already holds crops of an earlier run; give --overwrite to replace "
                              "them, or another folder")
        counts, crops = _crop_faces(src_dir, folder, find, detector_name, min_size, size)
        out = folder.commit()
    if crops:
        click.echo(f"wrote {len(crops)} crops of {size}x{size} and {INDEX} to {out}; train on them with "
                   f"`ganlab train --dataset folder --data-root {out}`")
    else:
        click.echo(f"no faces of at least {min_size} pixels found; nothing to train on in {out}")
    click.echo(f"{counts['images_read']} images read, {len(crops)} faces kept, {counts['faces_too_small']} faces "
               f"too small (< {min_size} px), {counts['unreadable']} unreadable files")


def _crop_faces(src_dir: Path, folder, find, detector_name: str, min_size: int, size: int):
    from PIL import Image
    from tqdm import tqdm

    crops, unreadable, read, small = {}, [], 0, 0
    for path in tqdm(find_images(src_dir), desc="finding faces", unit="img"):
        where = str(path.relative_to(src_dir))
        try:
            image = read_rgb(path)
        except ValueError as exc:
            unreadable.append({"file": where, "reason": str(exc)})
            continue
        read += 1
        height, width = image.shape[:2]
        for box in find.detect(image):
            if box[2] < min_size:
                small += 1
                continue
            left, top, side = square_crop(box, width, height)
            safe = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(where).stem)[:60].strip("_") or "image"
            name = f"{len(crops):06d}_{safe}.png"
            crop = Image.fromarray(image[top:top + side, left:left + side])
            crop.resize((size, size), Image.LANCZOS).save(folder.staging / name)
            crops[name] = {"source": where, "box": [int(v) for v in box], "square": [left, top, side]}
    counts = {"images_read": read, "faces_kept": len(crops), "faces_too_small": small, "unreadable": len(unreadable)}
    index = {"source_dir": str(src_dir.resolve()), "detector": detector_name, "min_size": min_size,
             "size": size, "counts": counts, "crops": crops, "unreadable": unreadable}
    folder.write_text(INDEX, json.dumps(index, indent=1) + "\n")
    return counts, crops


@hookimpl
def ganlab_register_commands(cli):
    cli.add_command(faces_command)
