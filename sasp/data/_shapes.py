"""Analytic shapes, rasterised exactly, and cheap textured backgrounds for the synthetic task.

Pixel convention: pixel (row ``y``, column ``x``) is the unit square ``[x, x+1) x [y, y+1)`` and
belongs to a shape exactly when its centre ``(x + 0.5, y + 0.5)`` lies inside the shape's
closed outline. There is no antialiasing, so every mask is a pure function of the geometry:
an axis-aligned square with integer corner and side ``s`` covers exactly ``s * s`` pixels, and
a disc of radius ``r`` covers between ``pi (r - 0.71)^2`` and ``pi (r + 0.71)^2`` pixels (a
pixel whose centre is inside lies within ``sqrt(2) / 2`` of the disc).

Squares, bars and crosses have integer geometry; circles, diamonds, triangles and stars have
float geometry. Polygons use the even-odd rule on pixel centres.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Tuple

import numpy as np

KINDS: Tuple[str, ...] = ("circle", "square", "triangle", "bar", "diamond", "star", "cross")
"""Shape kinds, also their nouns in the queries."""

PLURALS: Dict[str, str] = {k: ("crosses" if k == "cross" else k + "s") for k in KINDS}

COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (35, 70, 225),
    "yellow": (245, 215, 30),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
    "purple": (140, 45, 175),
    "orange": (250, 135, 20),
}
"""Object colours (RGB); each object gets this colour plus a small per-channel jitter."""

Raster = Tuple[int, int, np.ndarray]
"""(top, left, mask): a bool mask [h, w] whose pixel (0, 0) is image pixel (top, left)."""


def rect_raster(x: int, y: int, width: int, height: int) -> Raster:
    """The axis-aligned rectangle ``[x, x + width) x [y, y + height)``: ``width * height`` pixels."""
    return y, x, np.ones((height, width), dtype=bool)


def _span(lo: float, hi: float) -> Tuple[int, int]:
    """Pixels ``[a, b)`` whose centres lie in ``[lo, hi]``."""
    return math.ceil(lo - 0.5), math.floor(hi - 0.5) + 1


def _centres(lo: float, hi: float) -> Tuple[int, np.ndarray]:
    a, b = _span(lo, hi)
    return a, np.arange(a, max(a, b), dtype=np.float64) + 0.5


def disc_raster(cx: float, cy: float, r: float) -> Raster:
    """Pixels whose centre is within distance ``r`` of ``(cx, cy)``."""
    left, xs = _centres(cx - r, cx + r)
    top, ys = _centres(cy - r, cy + r)
    return top, left, (xs[None, :] - cx) ** 2 + (ys[:, None] - cy) ** 2 <= r * r


def diamond_raster(cx: float, cy: float, r: float) -> Raster:
    """Pixels whose centre satisfies ``|x - cx| + |y - cy| <= r`` (a square on its corner)."""
    left, xs = _centres(cx - r, cx + r)
    top, ys = _centres(cy - r, cy + r)
    return top, left, np.abs(xs[None, :] - cx) + np.abs(ys[:, None] - cy) <= r


def polygon_raster(vertices: np.ndarray) -> Raster:
    """Even-odd rule on pixel centres for a closed polygon ``vertices`` [V, 2] (x, y)."""
    v = np.asarray(vertices, dtype=np.float64)
    left, xs = _centres(v[:, 0].min(), v[:, 0].max())
    top, ys = _centres(v[:, 1].min(), v[:, 1].max())
    px, py = xs[None, :], ys[:, None]
    inside = np.zeros((ys.size, xs.size), dtype=bool)
    for (x0, y0), (x1, y1) in zip(v, np.roll(v, -1, axis=0)):
        if y0 == y1:
            continue
        crosses = (y0 > py) != (y1 > py)  # [h, 1]
        x_at = x0 + (py - y0) * ((x1 - x0) / (y1 - y0))
        inside ^= crosses & (px < x_at)
    return top, left, inside


def cross_raster(x: int, y: int, length: int, thickness: int) -> Raster:
    """A plus sign in the box ``[x, x + length)^2``: two centred arms of width ``thickness``
    (``length - thickness`` even), ``2 * length * thickness - thickness ** 2`` pixels."""
    if (length - thickness) % 2:
        raise ValueError(f"cross: length - thickness must be even, got {length} and {thickness}")
    m = np.zeros((length, length), dtype=bool)
    a = (length - thickness) // 2
    m[a:a + thickness, :] = True
    m[:, a:a + thickness] = True
    return y, x, m


def regular_polygon(cx: float, cy: float, radius: float, n: int, angle: float, inner: float = 0.0) -> np.ndarray:
    """Vertices [V, 2] of a regular ``n``-gon (or an ``n``-pointed star when ``inner > 0``, the
    inner radius as a fraction of ``radius``), first vertex at ``angle`` from straight up."""
    if inner > 0:
        t = angle + np.arange(2 * n) * (math.pi / n)
        rad = np.where(np.arange(2 * n) % 2 == 0, radius, radius * inner)
    else:
        t = angle + np.arange(n) * (2 * math.pi / n)
        rad = np.full(n, radius)
    return np.stack([cx + rad * np.sin(t), cy - rad * np.cos(t)], axis=1)


@dataclass(frozen=True)
class Shape:
    """One object: ``kind`` (one of ``KINDS``), ``colour`` (a ``COLOURS`` name), ``rgb`` (the
    jittered colour drawn) and ``geometry`` (kind-specific, see ``make_shape``)."""

    kind: str
    colour: str
    rgb: Tuple[int, int, int]
    geometry: Dict[str, Any]

    def raster(self) -> Raster:
        g = self.geometry
        if self.kind == "circle":
            return disc_raster(g["cx"], g["cy"], g["r"])
        if self.kind == "diamond":
            return diamond_raster(g["cx"], g["cy"], g["r"])
        if self.kind == "square":
            return rect_raster(g["x"], g["y"], g["side"], g["side"])
        if self.kind == "bar":
            return rect_raster(g["x"], g["y"], g["width"], g["height"])
        if self.kind == "cross":
            return cross_raster(g["x"], g["y"], g["length"], g["thickness"])
        return polygon_raster(np.asarray(g["vertices"]))


def make_shape(rng: np.random.Generator, kind: str, colour: str, cx: float, cy: float, size: float) -> Shape:
    """A ``kind`` centred near ``(cx, cy)`` whose half-extent is about ``size`` pixels.

    Geometry: circle and diamond ``{cx, cy, r}``; square ``{x, y, side}``; bar ``{x, y, width,
    height}`` (long side 2.5-4 times the short one, horizontal or vertical); cross ``{x, y,
    length, thickness}``; triangle (equilateral) and star (five points) ``{vertices}``
    (a list of [x, y]), both turned by a random angle.
    """
    jitter = rng.integers(-12, 13, size=3)
    rgb = tuple(int(v) for v in np.clip(np.asarray(COLOURS[colour]) + jitter, 0, 255))
    g: Dict[str, Any]
    if kind == "circle":
        g = {"cx": cx, "cy": cy, "r": size}
    elif kind == "diamond":
        g = {"cx": cx, "cy": cy, "r": size * 1.25}
    elif kind == "square":
        side = max(2, round(1.8 * size))
        g = {"x": round(cx - side / 2), "y": round(cy - side / 2), "side": side}
    elif kind == "bar":
        long = max(8, round(2.4 * size))
        short = max(2, round(long / rng.uniform(2.5, 4.0)))
        w, h = (long, short) if rng.random() < 0.5 else (short, long)
        g = {"x": round(cx - w / 2), "y": round(cy - h / 2), "width": w, "height": h}
    elif kind == "cross":
        length = max(5, round(2.1 * size))
        thickness = max(1, round(length * rng.uniform(0.28, 0.4)))
        thickness += (length - thickness) % 2
        g = {"x": round(cx - length / 2), "y": round(cy - length / 2), "length": length, "thickness": thickness}
    elif kind == "triangle":
        v = regular_polygon(cx, cy + 0.25 * size, 1.4 * size, 3, rng.uniform(0, 2 * math.pi / 3))
        g = {"vertices": v.tolist()}
    elif kind == "star":
        v = regular_polygon(cx, cy, 1.4 * size, 5, rng.uniform(0, 2 * math.pi / 5), inner=0.45)
        g = {"vertices": v.tolist()}
    else:
        raise ValueError(f"unknown shape kind {kind!r}; expected one of {KINDS}")
    return Shape(kind, colour, rgb, g)


BACKGROUNDS: Tuple[str, ...] = ("gradient", "stripes", "checker", "noise")
BACKGROUND_LEVELS = 240
"""Palette entries of a background; a scene's objects take the entries after them."""


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation mid-tone colour (float32 [3]) that every object colour stands out from."""
    return (rng.uniform(70, 175) + rng.uniform(-22, 22, size=3)).astype(np.float32)


def background(rng: np.random.Generator, height: int, width: int) -> Tuple[str, np.ndarray, np.ndarray]:
    """A textured background as palette levels: (kind, levels uint8 [H, W] below
    ``BACKGROUND_LEVELS``, palette float32 [BACKGROUND_LEVELS, 3] in [0, 255]); the image is
    ``palette[levels]``. Kinds: ``BACKGROUNDS``."""
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    c0, c1 = _muted(rng), _muted(rng)
    top = BACKGROUND_LEVELS - 1
    if kind == "gradient":
        t = rng.uniform(0, 2 * math.pi)
        ramp = ((np.arange(width, dtype=np.float32) * math.cos(t))[None, :]
                + (np.arange(height, dtype=np.float32) * math.sin(t))[:, None])
        ramp -= ramp.min()
        ramp *= top / max(float(ramp.max()), 1.0)
        levels = (ramp + 0.5).astype(np.uint8)
        palette = c0 + np.linspace(0, 1, BACKGROUND_LEVELS, dtype=np.float32)[:, None] * (c1 - c0)
        return kind, levels, palette
    palette = np.empty((BACKGROUND_LEVELS, 3), dtype=np.float32)
    if kind in ("stripes", "checker"):
        period = int(rng.integers(6, 40))
        u, v = np.arange(width)[None, :], np.arange(height)[:, None]
        if kind == "checker":
            band = (u // period + v // period) % 2
        else:
            if rng.random() < 0.5:  # horizontal rather than vertical bands
                u, v = v, u
            band = ((u + int(rng.integers(-1, 2)) * v) // period) % 2  # slope -1, 0 or 1
        palette[:] = c1
        palette[0] = c0
        return kind, band.astype(np.uint8), palette
    block = int(rng.choice([2, 4, 8]))
    coarse = rng.integers(0, BACKGROUND_LEVELS, size=(-(-height // block), -(-width // block)), dtype=np.uint8)
    levels = np.repeat(np.repeat(coarse, block, axis=0), block, axis=1)[:height, :width]
    palette[:] = c0 + np.linspace(-25, 25, BACKGROUND_LEVELS, dtype=np.float32)[:, None]
    return kind, np.ascontiguousarray(levels), palette
