"""Image files on disk: which files count as images, decoding them, and the one-line errors readers share."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from ganlab.errors import GanlabError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

def one_line(text: Any) -> str:
    return " ".join(str(text).split())


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


def load_image(path: str | Path) -> Image.Image:
    """Decode a file fully (so no handle stays open); odd modes (P, RGBA, CMYK...) become RGB."""
    with open(path, "rb") as f:
        image = Image.open(f)
        image.load()
    return image if image.mode in ("L", "RGB") else image.convert("RGB")


class FileImages(Dataset):
    """Unlabelled image files: items (PIL image, -1)."""

    def __init__(self, paths: list[Path]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return load_image(self.paths[index]), -1


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def image_folder(name: str, folder: Path) -> Dataset:
    """torchvision ImageFolder (class = sorted sub-folder index), one-line errors."""
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(folder), loader=load_image)
    except (FileNotFoundError, RuntimeError) as exc:
        raise GanlabError(f"{name}: no images in the class sub-folders of {folder} ({one_line(exc)})") from None
