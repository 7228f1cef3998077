"""Writes ``cv2_polygons.npz``: random polygons and the masks OpenCV paints for them.

The oracle of ``test_polygon.py``. Run it with the OpenCV that LISA pins (the masks of
ReasonSeg are drawn by LISA's ``get_mask_from_json`` with it)::

    python -m venv /tmp/cv48 && /tmp/cv48/bin/pip install "numpy<2" opencv-python-headless==4.8.0.74
    /tmp/cv48/bin/python tests/data/make_cv2_polygons.py

Each mask is ``cv2.polylines(m, [pts], True, 1, 1)`` then ``cv2.fillPoly(m, [pts], 1)``, as
LISA draws every ReasonSeg polygon.
"""
import os

import cv2
import numpy as np


def cases(seed: int = 0):
    rng = np.random.default_rng(seed)
    for t in range(400):
        big = t >= 340
        h, w = (int(v) for v in rng.integers(1, 120 if big else 40, 2))
        n = int(rng.integers(1, 40 if big else 13))
        reach = [6, 40, 1500][t % 3]  # vertices a little, far, or very far outside the image
        pts = np.stack([rng.integers(-reach, w + reach, n), rng.integers(-reach, h + reach, n)], 1)
        if t % 4 == 0:  # a star-shaped blob, like a hand-drawn outline
            a = np.sort(rng.uniform(0, 2 * np.pi, n))
            r = rng.uniform(0.2, 0.7) * min(h, w) * rng.uniform(0.7, 1.3, n)
            pts = np.stack([w / 2 + r * np.cos(a), h / 2 + r * np.sin(a)], 1)
        yield h, w, pts.astype(np.int32)


def main() -> None:
    sizes, counts, points, bits = [], [], [], []
    for h, w, pts in cases():
        m = np.zeros((h, w), np.uint8)
        cv2.polylines(m, np.array([pts], dtype=np.int32), True, 1, 1)
        cv2.fillPoly(m, np.array([pts], dtype=np.int32), 1)
        sizes.append((h, w))
        counts.append(len(pts))
        points.append(pts)
        bits.append(np.packbits(m.ravel().astype(bool)))
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cv2_polygons.npz")
    np.savez_compressed(
        out,
        sizes=np.array(sizes, np.int64),
        counts=np.array(counts, np.int64),
        points=np.concatenate(points).astype(np.int64),
        bit_counts=np.array([b.size for b in bits], np.int64),
        bits=np.concatenate(bits),
        opencv=np.array(cv2.__version__),
    )
    print(f"wrote {out}: {len(sizes)} polygons, OpenCV {cv2.__version__}")


if __name__ == "__main__":
    main()
