"""Detector ``haar-face``: OpenCV's frontal-face Haar cascade (Viola & Jones 2001), as shipped in OpenCV 4.

``haarcascade_frontalface_alt`` with ``min_neighbors`` 5 and ``scale_factor`` 1.1, chosen by measurement
(``benchmarks/README.md``, "haar-face"): it finds no face in 21 face-free pictures and 98 of skimage's 100 LFW
faces, where OpenCV's ``_default`` cascade found the same faces but also false ones (3 in ``flower.jpg``, 6 in
``coins``) that only a ``min_neighbors`` costing a third of the real faces removed. ``detect(image)`` runs on the
grey image and returns ``(x, y, width, height)`` boxes in its pixels. The cascade's window is 24 x 24 pixels, so
smaller faces are never found: upscale small images first (``forget-concept`` does, to its ``detect_size``).
OpenCV 5 moved the cascades out of the main package: this needs ``opencv-python-headless`` 4.x, and says so.
"""
from __future__ import annotations

from ganlab import Detector, GanlabError, hookimpl

CASCADE = "haarcascade_frontalface_alt.xml"


class HaarFace(Detector):
    name = "haar-face"
    description = "Frontal faces: OpenCV's Haar cascade (haarcascade_frontalface_alt), on the grey image"

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, min_size: int = 24,
                 max_size: int = 0):
        if scale_factor <= 1 or min_neighbors < 0 or min_size < 1 or max_size < 0:
            raise GanlabError("haar-face needs scale_factor > 1, min_neighbors >= 0, min_size >= 1, max_size >= 0")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.max_size = max_size  # 0: no upper limit
        self._cascade = None

    def cascade(self):
        """The cascade classifier, loaded on first use."""
        if self._cascade is None:
            import cv2

            if not hasattr(cv2, "CascadeClassifier") or not getattr(getattr(cv2, "data", None), "haarcascades", ""):
                raise GanlabError(f"OpenCV {cv2.__version__} has no Haar cascades (OpenCV 5 moved them out); "
                                  "install opencv-python-headless<5 for the haar-face detector")
            path = cv2.data.haarcascades + CASCADE
            cascade = cv2.CascadeClassifier(path)
            if cascade.empty():
                raise GanlabError(f"could not load OpenCV's face cascade {path}; reinstall opencv-python-headless<5")
            self._cascade = cascade
        return self._cascade

    def detect(self, image):
        import cv2
        import numpy as np

        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise ValueError(f"haar-face expects a uint8 image (0..255), got {image.dtype}")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if image.ndim == 3 and image.shape[2] in (3, 4):
            grey = cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_RGB2GRAY)
        elif image.ndim == 2:
            grey = np.ascontiguousarray(image)
        else:
            raise ValueError(f"haar-face expects an H x W or H x W x 3 image, got shape {image.shape}")
        if min(grey.shape) < self.min_size:
            self.cascade()  # still report a missing cascade on tiny images
            return []
        found = self.cascade().detectMultiScale(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
            maxSize=(self.max_size, self.max_size) if self.max_size else (0, 0))
        return [tuple(int(v) for v in box) for box in found]


@hookimpl
def ganlab_register_detectors(register):
    register(HaarFace())
