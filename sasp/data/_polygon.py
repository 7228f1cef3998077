"""Polygon rasterisation with OpenCV's integer rules, in numpy.

LISA draws ReasonSeg's masks (``get_mask_from_json`` in dvlab-research/LISA
``utils/data_processing.py``) with ``cv2.polylines(mask, pts, True, v, 1)`` followed by
``cv2.fillPoly(mask, pts, v)`` on int32 vertices. ``polygon_patch`` returns the pixel set
those two calls paint, so that our masks equal LISA's without OpenCV installed. It follows
OpenCV 4.x ``modules/imgproc/src/drawing.cpp`` with ``shift=0`` and ``LINE_8``:

* the outline: every edge (closing edge included) is an 8-connected Bresenham line, drawn
  from its left end (``LineIterator(..., left_to_right=true)``), clipped to the image with
  ``clipLine``'s integer arithmetic when an end lies outside;
* the interior: the scanline fill of ``FillEdgeCollection``. Each non-horizontal edge is a
  16.16 fixed-point ``x`` (shifted by half a pixel) at its upper row and a step ``dx`` per row
  (C division, rounded towards zero); row ``y`` holds the edges with ``y0 <= y < y1``; sorted
  by ``x`` they pair up into spans ``[floor(x_left), floor(x_right)]``, clipped to the image;
* an edge with an end outside the image is set up from its clipped line's ends (its own ends
  when the clipped line is horizontal), without the half-pixel shift.

``fillPoly`` paints the same outline itself, so the union of outline and interior is exactly
what LISA's two calls produce. ``tests/data/test_polygon.py`` checks this bit for bit against
masks drawn by ``opencv-python`` 4.8.0.74, the version LISA pins (4.10 paints the same;
OpenCV 4.11 changed ``fillPoly``, so masks drawn with 4.11 or later differ on borders).
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

_SHIFT = 16
_HALF = 1 << (_SHIFT - 1)
MAX_COORD = 1 << 24
"""Vertices must satisfy ``|x|, |y| < MAX_COORD``; OpenCV's int arithmetic overflows beyond."""


def _cdiv(a: int, b: int) -> int:
    """C integer division (rounds towards zero) of Python ints."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _clip_line(w: int, h: int, x1: int, y1: int, x2: int, y2: int) -> Tuple[bool, int, int, int, int]:
    """OpenCV's ``clipLine`` on a ``w x h`` image: (inside, x1, y1, x2, y2) after clipping."""
    right, bottom = w - 1, h - 1

    def code(x: int, y: int) -> int:
        return (x < 0) + (x > right) * 2 + (y < 0) * 4 + (y > bottom) * 8

    c1, c2 = code(x1, y1), code(x2, y2)
    if (c1 & c2) == 0 and (c1 | c2) != 0:
        if c1 & 12:
            a = 0 if c1 < 8 else bottom
            x1 += _cdiv((a - y1) * (x2 - x1), y2 - y1)
            y1 = a
            c1 = (x1 < 0) + (x1 > right) * 2
        if c2 & 12:
            a = 0 if c2 < 8 else bottom
            x2 += _cdiv((a - y2) * (x2 - x1), y2 - y1)
            y2 = a
            c2 = (x2 < 0) + (x2 > right) * 2
        if (c1 & c2) == 0 and (c1 | c2) != 0:
            if c1:
                a = 0 if c1 == 1 else right
                y1 += _cdiv((a - x1) * (y2 - y1), x2 - x1)
                x1 = a
                c1 = 0
            if c2:
                a = 0 if c2 == 1 else right
                y2 += _cdiv((a - x2) * (y2 - y1), x2 - x1)
                x2 = a
                c2 = 0
    return (c1 | c2) == 0, x1, y1, x2, y2


def line_pixels(w: int, h: int, x1: int, y1: int, x2: int, y2: int) -> Tuple[np.ndarray, np.ndarray]:
    """The pixels ``cv2.line(img, (x1, y1), (x2, y2), v, 1, cv2.LINE_8)`` paints on a ``w x h``
    image: two int64 arrays (xs, ys) of equal length, inside the image."""
    if not (0 <= x1 < w and 0 <= x2 < w and 0 <= y1 < h and 0 <= y2 < h):
        inside, x1, y1, x2, y2 = _clip_line(w, h, x1, y1, x2, y2)
        if not inside:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if x2 < x1:  # left_to_right: walk from the left end
        x1, y1, x2, y2 = x2, y2, x1, y1
    dx, dy = x2 - x1, y2 - y1
    sy = -1 if dy < 0 else 1
    dy = abs(dy)
    major, minor = (dy, dx) if dy > dx else (dx, dy)
    k = np.arange(major + 1, dtype=np.int64)
    # Bresenham with OpenCV's error term (err = major - 2 minor, step on err < 0) takes
    # its m-th minor step at k where m - 1/2 < minor * k / major, i.e.:
    m = (2 * minor * k + major - 1) // (2 * major) if major else k
    if dy > dx:
        return x1 + m, y1 + sy * k
    return x1 + k, y1 + sy * m


def _edges(xs: np.ndarray, ys: np.ndarray, w: int, h: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``CollectPolyEdges``: (y0, y1, x, dx) int64 of the non-horizontal edges, ``x`` the
    16.16 fixed-point abscissa at row ``y0``, ``dx`` its change per row."""
    n = xs.size
    out = []
    for i in range(n):
        j = i - 1 if i else n - 1
        x0, y0, x1, y1 = int(xs[j]), int(ys[j]), int(xs[i]), int(ys[i])
        if y0 == y1:
            continue
        # The edge's ends, moved to the clipped line's ends when an end is outside the image
        # ("use clipped endpoints to create a more accurate PolyEdge"); else shifted by half a
        # pixel, so that spans round to the nearest pixel.
        c0x, c0y, c1x, c1y = (x0 << _SHIFT) + _HALF, y0, (x1 << _SHIFT) + _HALF, y1
        if not (0 <= x0 < w and 0 <= x1 < w and 0 <= y0 < h and 0 <= y1 < h):
            _, t0x, t0y, t1x, t1y = _clip_line(w, h, x0, y0, x1, y1)
            if t0y != t1y:
                c0x, c0y, c1x, c1y = t0x << _SHIFT, t0y, t1x << _SHIFT, t1y
            else:
                c0x, c1x = x0 << _SHIFT, x1 << _SHIFT
        dx = _cdiv(c1x - c0x, c1y - c0y)
        if y0 < y1:
            out.append((y0, y1, c0x + (y0 - c0y) * dx, dx))
        else:
            out.append((y1, y0, c1x + (y1 - c1y) * dx, dx))
    if not out:
        return (np.zeros(0, np.int64),) * 4  # type: ignore[return-value]
    e = np.array(out, dtype=np.int64)
    return e[:, 0], e[:, 1], e[:, 2], e[:, 3]


def _fill_spans(xs: np.ndarray, ys: np.ndarray, w: int, h: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``FillEdgeCollection``'s spans for one closed polygon: (rows, x_left, x_right) int64,
    already clipped to the image (x_left <= x_right)."""
    top, bottom, x_top, step = _edges(xs, ys, w, h)
    empty = np.zeros(0, np.int64)
    if top.size < 2:
        return empty, empty, empty
    first = np.maximum(top, 0)
    last = np.minimum(bottom, h)  # rows first .. last-1
    count = np.maximum(last - first, 0)
    total = int(count.sum())
    if total == 0:
        return empty, empty, empty
    edge = np.repeat(np.arange(count.size), count)
    offsets = np.cumsum(count) - count
    rows = first[edge] + (np.arange(total) - offsets[edge])
    x = x_top[edge] + (rows - top[edge]) * step[edge]
    order = np.lexsort((x, rows))
    rows, x = rows[order], x[order]
    # every row holds an even number of edges (a closed path crosses each line y + 1/2 evenly)
    left, right, rows = x[0::2], x[1::2], rows[0::2]
    xl = np.maximum(left >> _SHIFT, 0)
    xr = np.minimum(right >> _SHIFT, w - 1)
    ok = xl <= xr
    return rows[ok], xl[ok], xr[ok]


def polygon_patch(points: np.ndarray, height: int, width: int) -> Tuple[int, int, np.ndarray]:
    """The pixels LISA's ``polylines`` + ``fillPoly`` paint for one polygon.

    Args:
        points: int64 [N, 2] vertices (x, y), N >= 1, already truncated to integers as
            ``np.array(points, dtype=np.int32)`` does.
        height, width: the image size.

    Returns:
        (top, left, patch): a bool patch [h, w] placed at row ``top``, column ``left``; it
        covers the polygon's bounding box clipped to the image (an empty patch when the
        polygon lies outside the image).
    """
    xs = np.ascontiguousarray(points[:, 0], dtype=np.int64)
    ys = np.ascontiguousarray(points[:, 1], dtype=np.int64)
    left, right = max(int(xs.min()), 0), min(int(xs.max()), width - 1)
    top, bottom = max(int(ys.min()), 0), min(int(ys.max()), height - 1)
    if left > right or top > bottom:
        return 0, 0, np.zeros((0, 0), bool)
    ph, pw = bottom - top + 1, right - left + 1
    patch = np.zeros((ph, pw), bool)
    rows, xl, xr = _fill_spans(xs, ys, width, height)
    if rows.size:
        diff = np.zeros((ph, pw + 1), np.int32)
        np.add.at(diff, (rows - top, xl - left), 1)
        np.add.at(diff, (rows - top, xr + 1 - left), -1)
        patch |= np.cumsum(diff, axis=1)[:, :pw] > 0
    px: List[np.ndarray] = []
    py: List[np.ndarray] = []
    n = xs.size
    for i in range(n):
        j = i - 1 if i else n - 1
        lx, ly = line_pixels(width, height, int(xs[j]), int(ys[j]), int(xs[i]), int(ys[i]))
        px.append(lx)
        py.append(ly)
    lx, ly = np.concatenate(px), np.concatenate(py)
    patch[ly - top, lx - left] = True
    return top, left, patch
