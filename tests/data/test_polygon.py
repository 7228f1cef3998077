"""``sasp.data._polygon`` paints exactly the pixels OpenCV paints for LISA's ReasonSeg masks."""
import os

import numpy as np
import pytest

from sasp.data._polygon import line_pixels, polygon_patch

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cv2_polygons.npz")


def paint(points, h, w):
    out = np.zeros((h, w), np.uint8)
    top, left, patch = polygon_patch(np.asarray(points, np.int64).reshape(-1, 2), h, w)
    out[top : top + patch.shape[0], left : left + patch.shape[1]][patch] = 1
    return out


def test_equals_opencv_4_8_masks():
    """400 random polygons (self-intersecting, degenerate, vertices far outside the image, up
    to 40 vertices) drawn by ``cv2.polylines`` + ``cv2.fillPoly`` of opencv-python 4.8.0.74
    (``make_cv2_polygons.py``): every mask equal bit for bit."""
    g = np.load(GOLDEN)
    assert str(g["opencv"]).startswith("4.8")
    p = b = 0
    for (h, w), n, nb in zip(g["sizes"], g["counts"], g["bit_counts"]):
        pts = g["points"][p : p + n]
        want = np.unpackbits(g["bits"][b : b + nb])[: h * w].reshape(h, w)
        p, b = p + n, b + nb
        got = paint(pts, int(h), int(w))
        assert np.array_equal(got, want), f"polygon {pts.tolist()} on {h}x{w}"
    assert p == g["points"].shape[0]


def bresenham_loop(x1, y1, x2, y2):
    """OpenCV's ``LineIterator`` (8-connected, left to right) written as its loop."""
    if x2 < x1:
        x1, y1, x2, y2 = x2, y2, x1, y1
    dx, dy = x2 - x1, y2 - y1
    sy = -1 if dy < 0 else 1
    dy = abs(dy)
    steep = dy > dx
    major, minor = (dy, dx) if steep else (dx, dy)
    err = major - 2 * minor
    x, y, out = x1, y1, []
    for _ in range(major + 1):
        out.append((x, y))
        take_minor = err < 0
        err += -2 * minor + (2 * major if take_minor else 0)
        if steep:
            y += sy
            x += 1 if take_minor else 0
        else:
            x += 1
            y += sy if take_minor else 0
    return out


@pytest.mark.parametrize("seed", range(3))
def test_line_closed_form_equals_loop(seed):
    rng = np.random.default_rng(seed)
    for _ in range(300):
        x1, y1, x2, y2 = (int(v) for v in rng.integers(0, 60, 4))
        xs, ys = line_pixels(60, 60, x1, y1, x2, y2)
        assert list(zip(xs.tolist(), ys.tolist())) == bresenham_loop(x1, y1, x2, y2)


@pytest.mark.parametrize("x0,y0,x1,y1", [(2, 3, 9, 7), (0, 0, 19, 14), (5, 5, 5, 9), (4, 2, 11, 2)])
def test_rectangle_covers_both_borders(x0, y0, x1, y1):
    """OpenCV's outline is part of the mask: an axis-aligned rectangle with integer corners
    covers (x1 - x0 + 1) * (y1 - y0 + 1) pixels (pycocotools would give (x1-x0)*(y1-y0))."""
    m = paint([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], 20, 24)
    assert m.sum() == (x1 - x0 + 1) * (y1 - y0 + 1)
    assert m[y0 : y1 + 1, x0 : x1 + 1].all()


def test_right_triangle_count():
    """Legs of 10 on the axes: the rows hold 11, 10, ..., 1 pixels (the hypotenuse x + y = 10
    passes through pixel centres, so every row ends on it) = 66."""
    m = paint([(0, 0), (10, 0), (0, 10)], 16, 16)
    assert m.sum() == 66
    assert all(m[y, : 11 - y].all() and not m[y, 11 - y :].any() for y in range(11))


def test_clipping_and_outside():
    assert paint([(-5, -5), (30, -5), (30, 30), (-5, 30)], 7, 9).sum() == 63  # covers the image
    assert paint([(20, 20), (25, 20), (25, 25)], 10, 10).sum() == 0  # wholly outside
    assert paint([(3, 4)], 10, 10).sum() == 1  # one vertex: one pixel
    assert paint([(1, 1), (6, 1)], 10, 10).sum() == 6  # two vertices: a segment
