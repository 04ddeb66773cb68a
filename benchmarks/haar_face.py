"""Which OpenCV face cascade and settings `haar-face` uses: false faces on face-free pictures against real faces found.

Face-free: scikit-learn's two sample photos (china, flower) and 17 of skimage's sample images (coffee, chelsea,
rocket, coins, brick, grass, gravel, text, page, moon, hubble_deep_field, immunohistochemistry, logo, clock,
colorwheel, retina, cell). Faces: skimage's astronaut, and the 100 faces of skimage's LFW subset, each padded by
12 px (edge pixels repeated) and enlarged to 147 px, as a face in a photo would be. Every cascade OpenCV 4 ships
for frontal faces, at scale factor 1.1, for several ``min_neighbors``.

    .venv/bin/python benchmarks/haar_face.py
"""
from __future__ import annotations

import cv2
import numpy as np
import skimage.data
from sklearn.datasets import load_sample_images

CASCADES = ("default", "alt", "alt2", "alt_tree")


def pictures() -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    free = dict(zip(("china", "flower"), load_sample_images().images))
    for name in ("coffee", "chelsea", "rocket", "coins", "brick", "grass", "gravel", "text", "page", "moon",
                 "hubble_deep_field", "immunohistochemistry", "logo", "clock", "colorwheel", "retina", "cell"):
        image = getattr(skimage.data, name)()
        if image.dtype != np.uint8:
            image = (255 * (image - image.min()) / np.ptp(image)).astype(np.uint8)
        free[name] = image[:, :, :3] if image.ndim == 3 else image
    faces = [cv2.resize(cv2.copyMakeBorder((255 * f).astype(np.uint8), 12, 12, 12, 12, cv2.BORDER_REPLICATE),
                        (147, 147)) for f in skimage.data.lfw_subset()[:100]]
    return free, faces


def grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


def main() -> None:
    free, faces = pictures()
    print("| cascade | min_neighbors | false faces (pictures with any) | LFW faces found | astronaut |")
    print("|---|---|---|---|---|")
    for name in CASCADES:
        cascade = cv2.CascadeClassifier(f"{cv2.data.haarcascades}haarcascade_frontalface_{name}.xml")
        for neighbours in (3, 5, 8):
            def detect(image, cascade=cascade, neighbours=neighbours):
                return cascade.detectMultiScale(grey(image), scaleFactor=1.1, minNeighbors=neighbours,
                                                minSize=(24, 24))
            false = {k: len(detect(v)) for k, v in free.items() if len(detect(v))}
            found = sum(len(detect(f)) > 0 for f in faces)
            shown = ", ".join(f"{k} {v}" for k, v in false.items()) or "none"
            print(f"| {name} | {neighbours} | {sum(false.values())} ({shown}) | {found}/100 | "
                  f"{len(detect(skimage.data.astronaut()))} |")


if __name__ == "__main__":
    main()
