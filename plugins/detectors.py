"""Detector ``haar-face``: OpenCV 4's frontal-face Haar cascade (Viola & Jones 2001), on the grey image.

``haarcascade_frontalface_alt`` at scale factor 1.1 and ``min_neighbors`` 5, chosen by measurement
(``benchmarks/README.md``, "haar_face.py"): no face in 19 face-free pictures, 98 of 100 LFW faces, where the
``_default`` cascade also finds false ones (3 in ``flower.jpg``, 6 in ``coins``). The cascade's window is 24 x 24
pixels: upscale small images first (``forget-concept`` does).
"""
from functools import cached_property

from ganlab import Detector, GanlabError, hookimpl

CASCADE = "haarcascade_frontalface_alt.xml"
WINDOW = 24  # the cascade's own size: nothing smaller is found


class HaarFace(Detector):
    name = "haar-face"
    description = "Frontal faces: OpenCV's Haar cascade (haarcascade_frontalface_alt), on the grey image"

    @cached_property
    def cascade(self):
        import cv2

        if not hasattr(cv2, "CascadeClassifier") or not getattr(getattr(cv2, "data", None), "haarcascades", ""):
            raise GanlabError(f"OpenCV {cv2.__version__} has no Haar cascades (OpenCV 5 moved them out); "
                              "install opencv-python-headless<5 for the haar-face detector")
        path = cv2.data.haarcascades + CASCADE
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise GanlabError(f"could not load OpenCV's face cascade {path}; reinstall opencv-python-headless<5")
        return cascade

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
        cascade = self.cascade  # a missing cascade is reported on tiny images too
        if min(grey.shape) < WINDOW:
            return []
        found = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(WINDOW, WINDOW))
        return [tuple(int(v) for v in box) for box in found]


@hookimpl
def ganlab_register_detectors(register):
    register(HaarFace())
