"""Image files on disk: which files count as images, decoding them, and the one-line errors readers share.

A file that cannot be used raises :class:`ganlab.pixel_formats.BadImageError` (a ``GanlabError``) naming
the file and the problem: broken symlink, empty file, not an image, truncated or corrupt, too large
(PIL's decompression bomb guard, its warning treated as an error too), or pixel values ganlab will not
guess at (see ``ganlab.pixel_formats``). ``load_split(skip_bad=True)`` drops such files instead.

Folders are walked by ganlab itself (:class:`ImageTree`, torchvision's ``ImageFolder`` layout): symlinked
folders are followed, but each real folder is listed once, so a symlink loop ends and an image reached
through two links is counted once. Names starting with '.' (hidden files, macOS ``._*`` resource forks,
``.ipynb_checkpoints``) are ignored.
"""
from __future__ import annotations

import errno
import io
import os
import stat
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ganlab.errors import GanlabError
from ganlab.pixel_formats import BadImageError, bad_image, one_line, printable, to_8bit

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# What the contents may be, whatever the suffix says: no format whose decoder runs external programs (EPS).
IMAGE_FORMATS = ("JPEG", "PNG", "PPM", "BMP", "TIFF", "WEBP", "GIF")


def missing(name: str, files: str, folder: Path, downloadable: bool = True) -> GanlabError:
    hint = "give --data-root DIR, or --download to fetch it" if downloadable else "give --data-root DIR"
    return GanlabError(f"{name}: expected {files} in {folder} ({hint})")


def need_root(source: str, root: Path | None, files: str) -> Path:
    if root is None:
        raise GanlabError(f"--data-root is required for {source} (the folder with {files})")
    return root


def no_variant(source: str, variant: str | None) -> None:
    if variant:
        raise GanlabError(f"{source} has no variants (got '{source}:{variant}'); use '{source}'")


def download_failed(source: str, root: Path, exc: BaseException) -> GanlabError:
    return GanlabError(f"{source}: download into {root} failed ({one_line(exc)}); "
                       f"fetch the files by hand and give --data-root DIR")


# ----------------------------------------------------------------------------- decoding

def _too_large(where: object, exc: BaseException) -> BadImageError:
    import re

    found = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = f"{int(found.group(1)):,} pixels" if found else one_line(exc)
    return bad_image(where, f"image too large (decompression bomb guard, {pixels}; PIL's limit is "
                            f"{Image.MAX_IMAGE_PIXELS:,})")


def decode_image(data: bytes, where: object) -> Image.Image:
    """Decode image bytes fully, as 'L' or 'RGB' (``ganlab.pixel_formats``); ``where`` names them in errors."""
    if not data:
        raise bad_image(where, "empty (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_large(where, exc) from None
        except UnidentifiedImageError:
            raise bad_image(where, f"not an image (not {', '.join(IMAGE_FORMATS)}, or its header is damaged)") \
                from None
        except MemoryError:
            raise bad_image(where, "image too large to decode in memory") from None
        except Exception as exc:  # OSError, SyntaxError, ValueError, struct.error, zlib.error... from the decoders
            raise bad_image(where, f"truncated or corrupt image ({type(exc).__name__}: {one_line(exc)})") from None
    return to_8bit(image, where)


def read_image_bytes(path: Path) -> bytes:
    """A file's bytes, or a BadImageError saying why not (broken symlink, loop, not a file, empty, unreadable)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise bad_image(path, f"broken symlink (points to {printable(os.readlink(path))})") from None
        raise bad_image(path, "file not found (removed while reading?)") from None
    except OSError as exc:
        problem = "symlink loop" if exc.errno == errno.ELOOP else f"cannot read ({exc.strerror or one_line(exc)})"
        raise bad_image(path, problem) from None
    if not stat.S_ISREG(info.st_mode):
        raise bad_image(path, "not a regular file")
    if info.st_size == 0:
        raise bad_image(path, "empty file (0 bytes)")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise bad_image(path, f"cannot read ({exc.strerror or one_line(exc)})") from None


def load_image(path: str | Path) -> Image.Image:
    """Decode a file fully (no handle stays open) as 'L' or 'RGB'; a BadImageError names the file and problem."""
    path = Path(path)
    return decode_image(read_image_bytes(path), path)


class FileImages(Dataset):
    """Unlabelled image files: items (PIL image, -1)."""

    def __init__(self, paths: list[Path]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return load_image(self.paths[index]), -1


# ----------------------------------------------------------------------------- listing folders

def _hidden(name: str) -> bool:
    return name.startswith(".")


def _is_image_name(name: str) -> bool:
    return not _hidden(name) and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks
    except OSError:  # a symlink loop on itself: listed as a file, and reported when read
        return False


def _real_file(entry: os.DirEntry, real_dir: str) -> str:
    """The file's real path: cheap for a plain file, resolved for a symlink."""
    return os.path.realpath(entry.path) if entry.is_symlink() else os.path.join(real_dir, entry.name)


def _entries(folder: Path | str, name: str = "folder") -> list[os.DirEntry]:
    """A folder's entries sorted by name, or a one-line error saying why it cannot be listed."""
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError as exc:
        raise GanlabError(f"{name}: cannot list {printable(folder)} ({exc.strerror or one_line(exc)})") from None


def class_folders(folder: Path) -> list[str]:
    """Sorted names of the sub-folders (symlinked ones too) that are not hidden: the classes, in label order."""
    return [e.name for e in _entries(folder) if not _hidden(e.name) and _is_dir(e)]


def image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted, each real file once; broken symlinks stay (to be reported)."""
    real_dir, seen, found = os.path.realpath(folder), set(), []
    for entry in _entries(folder):
        if not _is_image_name(entry.name) or _is_dir(entry):
            continue
        real = _real_file(entry, real_dir)
        if real not in seen:
            seen.add(real)
            found.append(Path(entry.path))
    return found


def _walk(top: Path, name: str, visited: set[str], reserved: frozenset[str]) -> list[tuple[str, str, str]]:
    """(folder, file name, real path) of the image files under ``top``, each real folder listed once.

    Folders in ``visited`` (and added to it here) are not listed again; nor are those in ``reserved``
    (the other class folders, which are listed as their own class) when reached from inside ``top``.
    """
    found, stack = [], [str(top)]
    while stack:
        folder = stack.pop()
        real_dir = os.path.realpath(folder)
        if real_dir in visited or (real_dir in reserved and folder != str(top)):  # a loop, or reached twice
            continue
        visited.add(real_dir)
        subfolders = []
        for entry in _entries(folder, name):
            if _hidden(entry.name):
                continue
            if _is_dir(entry):
                subfolders.append(entry.path)
            elif _is_image_name(entry.name):
                found.append((folder, entry.name, _real_file(entry, real_dir)))
        stack.extend(reversed(subfolders))
    return found


class ImageTree(Dataset):
    """ganlab's ``ImageFolder``: ``root/<class>/**/<image>``, labels = index of the sorted class folder.

    Like torchvision's: ``.classes``, ``.class_to_idx``, ``.samples`` (and ``.imgs``) as ``(path, label)``
    and ``.targets``, files sorted by folder path then name, nested folders included; items are
    ``(PIL image, label)``. Unlike it: symlinked folders are followed without looping, a real file or
    folder reached twice counts once (the first in that order), and hidden names are ignored.
    """

    def __init__(self, root: Path, name: str = "folder"):
        self.root = str(root)
        self.classes = class_folders(root)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        visited: set[str] = {os.path.realpath(root)}  # a link back to the root is a loop, not a class
        reserved = frozenset(os.path.realpath(root / cls) for cls in self.classes)  # each listed as its own class
        files: list[tuple[str, str, str, int]] = []
        for label, cls in enumerate(self.classes):
            files += [(folder, file, real, label) for folder, file, real in _walk(root / cls, name, visited, reserved)]
        files.sort(key=lambda f: (f[0], f[1]))  # torchvision's order: sorted folder paths, then sorted names
        seen: set[str] = set()
        self.samples: list[tuple[str, int]] = []
        for folder, file, real, label in files:
            if real not in seen:
                seen.add(real)
                self.samples.append((os.path.join(folder, file), label))
        self.imgs = self.samples
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        path, label = self.samples[index]
        return load_image(path), label


def image_folder(name: str, folder: Path) -> ImageTree:
    """An :class:`ImageTree` of ``folder``; every class folder must hold at least one image."""
    if not folder.is_dir():
        raise GanlabError(f"{name}: {folder} is not a folder (give --data-root DIR)")
    tree = ImageTree(folder, name)
    if not tree.classes:
        raise GanlabError(f"{name}: no images in the class sub-folders of {folder} (there are no class folders)")
    counts = [0] * len(tree.classes)
    for label in tree.targets:
        counts[label] += 1
    empty = [c for c, n in zip(tree.classes, counts) if n == 0]
    if empty:
        raise GanlabError(f"{name}: no images in the class sub-folders of {folder} ({', '.join(empty)} "
                          f"{'has' if len(empty) == 1 else 'have'} no {', '.join(IMAGE_SUFFIXES)} files, or only "
                          "links to images counted elsewhere); add images or remove the folder")
    return tree
