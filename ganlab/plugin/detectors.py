"""What a detector is: something that finds objects in an image and returns their boxes (for analyses such as
``forget-concept``, does G still draw the thing?, and commands such as ``ganlab faces``)."""
from typing import Any

from ganlab.plugin.components import Named

Box = tuple[int, int, int, int]  # x, y, width, height in pixels; x and y from the top-left corner


class Detector(Named):
    """Finds objects in one image. Set ``name`` (lowercase, digits, dashes) and ``description``.

    ``detect(image)`` takes a uint8 numpy array H x W (grey) or H x W x 3 (RGB, 0..255) and returns a list
    of boxes ``(x, y, width, height)`` in that image's pixels, an empty list when nothing is found.
    """

    def detect(self, image: Any) -> list[Box]:  # pragma: no cover - interface
        raise NotImplementedError
