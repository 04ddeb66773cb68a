"""Image value ranges: datasets hold uint8 0..255, G draws in [-1, 1] (tanh), reports show [0, 1]."""
import torch


def to_unit_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images in 0..255 -> float32 in [-1, 1] (``x / 127.5 - 1``), the generator's tanh range."""
    if images_uint8.dtype != torch.uint8:  # scaling float images twice is a silent bug: refuse it
        raise TypeError(f"to_unit_range expects uint8 images, got {images_uint8.dtype}")
    return images_uint8.to(torch.float32) / 127.5 - 1.0


def to_display_range(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (G's output) -> [0, 1] for grids and PNGs, clamped."""
    return ((images.float() + 1) / 2).clamp(0, 1)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (G's output) -> uint8 0..255, rounded and clamped: the scale real images come in."""
    return ((images.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
