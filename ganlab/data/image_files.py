"""Image files on disk: which files count as images, listing folders of them and decoding them. A file that
cannot be used raises a one-line ``BadImageError`` naming it and the problem. Symlinked folders are followed, each
real folder listed once, so a symlink loop ends; names starting with '.' (``._*`` resource forks) are ignored."""
import errno
import io
import os
import re
import stat
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ganlab.data.pixel_formats import bad_image, error_text, one_line, printable, to_8bit
from ganlab.errors import GanlabError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# What the contents may be, whatever the suffix says: no format whose decoder runs external programs (EPS).
IMAGE_FORMATS = ("JPEG", "PNG", "PPM", "BMP", "TIFF", "WEBP", "GIF")


def decode_image(data: bytes, where: object) -> Image.Image:
    """Decode image bytes fully, as 'L' or 'RGB' (``ganlab.data.pixel_formats``); ``where`` names them in errors."""
    if not data:
        raise bad_image(where, "empty (0 bytes)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            found = re.search(r"\((\d+) pixels\)", str(exc))
            pixels = f"{int(found.group(1)):,} pixels" if found else one_line(exc)
            raise bad_image(where, f"image too large (decompression bomb guard, {pixels}; PIL's limit is "
                                   f"{Image.MAX_IMAGE_PIXELS:,})") from None
        except UnidentifiedImageError:
            raise bad_image(where, f"not an image (not {', '.join(IMAGE_FORMATS)}, or a damaged header)") from None
        except MemoryError:
            raise bad_image(where, "image too large to decode in memory") from None
        except Exception as exc:  # OSError, SyntaxError, ValueError, struct.error, zlib.error... from the decoders
            raise bad_image(where, f"truncated or corrupt image ({error_text(exc)})") from None
    return to_8bit(image, where)


def load_image(path: str | Path) -> Image.Image:
    """Decode a file fully (no handle stays open) as 'L' or 'RGB'; a BadImageError names the file and problem."""
    path = Path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a fifo would block for ever
            raise bad_image(path, "not a regular file")
        if info.st_size == 0:
            raise bad_image(path, "empty file (0 bytes)")
        data = path.read_bytes()
    except FileNotFoundError:
        if path.is_symlink():
            raise bad_image(path, f"broken symlink (points to {printable(os.readlink(path))})") from None
        raise bad_image(path, "file not found (removed while reading?)") from None
    except OSError as exc:
        raise bad_image(path, "symlink loop" if exc.errno == errno.ELOOP else f"cannot read ({one_line(exc)})") \
            from None
    return decode_image(data, path)


class FileImages(Dataset):
    """Image files: items (PIL image, label), the label -1 when ``targets`` is not given."""

    def __init__(self, paths: list[str] | list[Path], targets: list[int] | None = None):
        self.paths, self.targets = paths, [-1] * len(paths) if targets is None else targets

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return load_image(self.paths[index]), self.targets[index]


def _listing(folder: Path | str, name: str = "folder") -> tuple[list[str], list[tuple[str, str]]]:
    """(sub-folder paths, (path, real path) of each image file) in ``folder``, by name, hidden names left out."""
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda e: e.name)
    except OSError as exc:
        raise GanlabError(f"{name}: cannot list {printable(folder)} ({one_line(exc)})") from None
    real_dir, folders, files = os.path.realpath(folder), [], []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        # a link is followed by os.path.isdir, False for a link to itself (listed as a file, reported when read)
        if os.path.isdir(entry.path) if entry.is_symlink() else entry.is_dir():
            folders.append(entry.path)
        elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
            real = os.path.realpath(entry.path) if entry.is_symlink() else os.path.join(real_dir, entry.name)
            files.append((entry.path, real))
    return folders, files


def _first_of_each(files: list[tuple]) -> list[tuple]:
    """``(path, real path, ...)`` tuples, each real file once (the first)."""
    unique: dict[str, tuple] = {}
    for file in files:
        unique.setdefault(file[1], file)
    return list(unique.values())


def class_folders(folder: Path) -> list[str]:
    """Sorted names of the sub-folders (symlinked ones too) that are not hidden: the classes, in label order."""
    return [os.path.basename(path) for path in _listing(folder)[0]]


def image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted, each real file once; broken symlinks stay (to be reported)."""
    return [Path(path) for path, _ in _first_of_each(_listing(folder)[1])]


class ImageTree(FileImages):
    """ganlab's ``ImageFolder``: ``root/<class>/**/<image>``, labels, attributes and file order as torchvision's;
    unlike it, a real file or folder reached twice counts once (the first), and every class must hold an image."""

    def __init__(self, root: Path, name: str = "folder"):
        self.root, self.classes = str(root), class_folders(root)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        tops = [str(root / cls) for cls in self.classes]
        visited = {os.path.realpath(root)}  # a link back to the root is a loop, not a class
        reserved = {os.path.realpath(top) for top in tops}  # a link to another class is left to that class
        stack, files = [(top, label) for label, top in reversed(list(enumerate(tops)))], []
        while stack:  # depth first, each class's folders in turn, sub-folders in name order
            folder, label = stack.pop()
            real = os.path.realpath(folder)
            if real in visited or (real in reserved and folder not in tops):  # a loop, or reached twice
                continue
            visited.add(real)
            folders, found = _listing(folder, name)
            files += [(path, real_path, label) for path, real_path in found]
            stack += [(sub, label) for sub in reversed(folders)]
        files.sort(key=lambda f: os.path.split(f[0]))  # torchvision's order: sorted folder paths, then names
        self.samples = self.imgs = [(path, label) for path, _, label in _first_of_each(files)]
        super().__init__([path for path, _ in self.samples], [label for _, label in self.samples])
        if not self.classes:
            raise GanlabError(f"{name}: no images in the class sub-folders of {root} (there are no class folders)")
        labelled = set(self.targets)
        empty = [c for label, c in enumerate(self.classes) if label not in labelled]
        if empty:
            raise GanlabError(f"{name}: no images in the class sub-folders of {root} ({', '.join(empty)} "
                              f"{'has' if len(empty) == 1 else 'have'} no {', '.join(IMAGE_SUFFIXES)} files, or "
                              "only links to images counted elsewhere); add images or remove the folder")
