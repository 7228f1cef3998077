"""A synthetic reasoning-segmentation task: coloured shapes on textured backgrounds, queries in
five tiers, exact masks; deterministic and generated on access.

Each sample is a pure function of ``(split, seed, index)``: its generator is
``np.random.default_rng([DOMAIN, SPLITS[split], seed, index])``, so a sample does not depend on
which samples were read before it, or in which process. The val and test sets are fixed
(seed 0 of their own split keys, disjoint from train's); a smaller set is a prefix of a larger
one. Nothing is stored: a train set of a million samples costs nothing until read. (NumPy may
change a Generator's streams between its releases; the sets are then regenerated differently.)

Scene: an image of 128..640 pixels a side, aspect (width / height) 1:3..3:1, a textured
background (gradient, stripes, checker or blocky noise, plus fine grey noise over everything)
and 2..6 objects of ``KINDS`` in ``COLOURS``, painted in order, so later objects hide parts of
earlier ones. A placement is kept only when every object keeps at least
``MIN_VISIBLE_FRACTION`` of its own area and ``MIN_VISIBLE_PIXELS`` pixels visible, and no two
objects of one colour touch (they would read as one). A target's mask is its visible pixels.

Queries (``meta["tier"]``), unambiguous by construction (see ``sasp.data._queries``):

- ``referring``: "the blue triangle", "the red shape", "the star";
- ``relational``: "the shape left of the red circle", "the largest green shape";
- ``reasoning``: implicit attributes, "the shape with three corners nearest the top",
  "the shape with the colour of grass", "the shape with the same colour as the star";
- ``multi``: "all the red shapes", "all the shapes with four corners", "all the shapes above
  the star": one [SEG] whose mask is the union of the targets;
- ``false_premise``: "the purple star" when there is none; answer ``REFUSAL``, empty mask.

``Sample.query`` is the phrase ("the blue triangle"); ``Sample.instruction`` is that phrase in
one of LISA's question forms ("Please segment the blue triangle."), what the model is asked.
Every token of an instruction or an answer (``split_words``) is in ``VOCABULARY``.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ._queries import ANSWER, REFUSAL, SEG_TOKEN, TIERS, VOCABULARY, Candidate, Facts, choose, prompt, split_words
from ._shapes import BACKGROUND_LEVELS, COLOURS, KINDS, Shape, background, make_shape
from .base import Reader, Sample

__all__ = ["ANSWER", "COLOURS", "KINDS", "REFUSAL", "SEG_TOKEN", "SPLITS", "TIERS", "VOCABULARY",
           "SyntheticReasonSeg", "split_words"]

SPLITS: Dict[str, int] = {"train": 0, "val": 1, "test": 2}
"""Split -> the split key in every sample's seed (disjoint streams per split)."""
DOMAIN = 0x5A5F
"""First word of every sample's seed (keeps these streams apart from other users of numpy)."""
GENERATOR_VERSION = 1
"""Part of the fingerprint: changes whenever the same (split, seed, index) yields another sample."""

MIN_SIDE, MAX_SIDE, MAX_ASPECT = 128, 640, 3.0
MIN_OBJECTS, MAX_OBJECTS = 2, 6
MIN_VISIBLE_FRACTION = 0.65
MIN_VISIBLE_PIXELS = 64
SAME_COLOUR_GAP = 3
MARGIN = 0.08
"""Relations and position superlatives need this lead, times sqrt(H * W) pixels (8 % of a side
of a square image)."""
"""Pixels that must separate the boxes of two objects of one colour from each other's pixels."""
_PLACEMENT_TRIES = 30
_SCENE_TRIES = 200


@dataclass
class Scene:
    """Objects and their visible pixels: ``owner`` uint8 [H, W] is 0 on the background and
    ``i + 1`` where object ``i`` is visible; ``boxes`` (top, left, bottom, right) bound each
    object's full shape; ``area`` is its full pixel count."""

    shapes: List[Shape]
    boxes: List[Tuple[int, int, int, int]]
    area: List[int]
    owner: np.ndarray

    def visible(self) -> Tuple[np.ndarray, np.ndarray]:
        """Visible pixel count [N] (int64) and visible centroid [N, 2] (x, y at pixel centres)."""
        count = np.zeros(len(self.shapes), dtype=np.int64)
        centroid = np.zeros((len(self.shapes), 2))
        for i, (top, left, bottom, right) in enumerate(self.boxes):
            ys, xs = np.nonzero(self.owner[top:bottom, left:right] == i + 1)
            count[i] = ys.size
            centroid[i] = (xs.mean() + left + 0.5, ys.mean() + top + 0.5)
        return count, centroid


def image_size(rng: np.random.Generator) -> Tuple[int, int]:
    """(height, width): log-uniform aspect in [1/3, 3], short side uniform in what fits."""
    aspect = math.exp(rng.uniform(-math.log(MAX_ASPECT), math.log(MAX_ASPECT)))
    ratio = min(max(aspect, 1 / aspect), MAX_ASPECT)
    short = int(rng.integers(MIN_SIDE, math.floor(MAX_SIDE / ratio) + 1))
    long = min(MAX_SIDE, max(short, math.floor(short * ratio)))
    return (short, long) if aspect >= 1 else (long, short)


def place_objects(rng: np.random.Generator, height: int, width: int, count: int) -> Scene:
    """Up to ``count`` objects, each accepted only if it fits the image and leaves every object
    (itself included) enough visible area; an object that fails ``_PLACEMENT_TRIES`` times is
    dropped."""
    owner = np.zeros((height, width), dtype=np.uint8)
    scene = Scene([], [], [], owner)
    visible = np.zeros(0, dtype=np.int64)
    scale, short = math.sqrt(height * width), min(height, width)
    for _ in range(count):
        for _ in range(_PLACEMENT_TRIES):
            kind = KINDS[int(rng.integers(len(KINDS)))]
            colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
            size = min(rng.uniform(0.05, 0.12) * scale, 0.28 * short)
            cx, cy = rng.uniform(1.4 * size, width - 1.4 * size), rng.uniform(1.4 * size, height - 1.4 * size)
            shape = make_shape(rng, kind, colour, cx, cy, size)
            top, left, mask = shape.raster()
            bottom, right = top + mask.shape[0], left + mask.shape[1]
            area = int(np.count_nonzero(mask))
            if top < 0 or left < 0 or bottom > height or right > width or area < MIN_VISIBLE_PIXELS:
                continue
            mates = [j + 1 for j, s in enumerate(scene.shapes) if s.colour == colour]
            g = SAME_COLOUR_GAP
            if mates and np.isin(owner[max(0, top - g):bottom + g, max(0, left - g):right + g], mates).any():
                continue
            window = owner[top:bottom, left:right]
            lost = np.bincount(window[mask], minlength=len(scene.shapes) + 1)[1:]
            need = np.maximum(MIN_VISIBLE_PIXELS, MIN_VISIBLE_FRACTION * np.asarray(scene.area, dtype=np.float64))
            if np.any(visible - lost < need):
                continue
            window[mask] = len(scene.shapes) + 1
            visible = np.append(visible - lost, area)
            scene.shapes.append(shape)
            scene.boxes.append((top, left, bottom, right))
            scene.area.append(area)
            break
    return scene


def render(rng: np.random.Generator, scene: Scene) -> Tuple[str, np.ndarray]:
    """The RGB uint8 image [H, W, 3] of ``scene`` and its background kind: one palette lookup
    (background levels, then one entry per object) plus fine grey noise."""
    height, width = scene.owner.shape
    kind, levels, palette = background(rng, height, width)
    levels = np.where(scene.owner > 0, scene.owner + np.uint8(BACKGROUND_LEVELS - 1), levels)
    palette = np.concatenate([palette, np.asarray([s.rgb for s in scene.shapes], dtype=np.float32)])
    image = np.take((np.clip(palette, 0, 255) + 0.5).astype(np.int16), levels, axis=0)
    amplitude = int(rng.integers(0, 13))
    image += rng.integers(-amplitude, amplitude + 1, size=(height, width, 1), dtype=np.int16)
    return kind, np.clip(image, 0, 255, out=image).astype(np.uint8)


def generate(split: str, seed: int, index: int, tier: str) -> Sample:
    """Sample ``index`` of ``(split, seed)`` in ``tier``; see the module docstring."""
    rng = np.random.default_rng([DOMAIN, SPLITS[split], seed, index])
    for _ in range(_SCENE_TRIES):
        height, width = image_size(rng)
        scene = place_objects(rng, height, width, int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1)))
        if len(scene.shapes) < MIN_OBJECTS:
            continue
        visible, centroid = scene.visible()
        facts = Facts(tuple(s.kind for s in scene.shapes), tuple(s.colour for s in scene.shapes),
                      visible.astype(np.float64), centroid, MARGIN * math.sqrt(height * width))
        cand: Optional[Candidate] = choose(rng, tier, facts)
        if cand is not None:
            break
    else:  # pragma: no cover - every tier is supported by a large share of scenes
        raise RuntimeError(f"no {tier} query in {_SCENE_TRIES} scenes for {split}/{seed}/{index}")
    instruction = prompt(rng, cand)
    bg, image = render(rng, scene)
    owner, ids = scene.owner, np.asarray(cand.targets, dtype=np.uint8) + 1

    def target() -> np.ndarray:
        return np.isin(owner, ids).astype(np.uint8)

    objects = [
        {"kind": s.kind, "colour": s.colour, "rgb": s.rgb, "geometry": s.geometry, "box": box,
         "area": area, "visible_area": int(v), "centroid": (float(c[0]), float(c[1]))}
        for s, box, area, v, c in zip(scene.shapes, scene.boxes, scene.area, visible, centroid)
    ]
    meta: Dict[str, Any] = {
        "dataset": "synthetic", "split": split, "seed": seed, "index": index, "tier": tier,
        "family": cand.family, "targets": list(cand.targets),
        "anchor": cand.anchor, "objects": objects, "background": bg, "height": height, "width": width,
    }
    has_target = bool(cand.targets)
    return Sample(id=f"synthetic/{split}/{seed}/{index}", image=image, query=cand.expression, target=target,
                  has_target=has_target, answer=ANSWER if has_target else REFUSAL, meta=meta,
                  instruction=instruction)


class SyntheticReasonSeg(Reader):
    """``size`` synthetic samples of ``split``, generated on access (see the module docstring).

    Args:
        split: "train", "val" or "test".
        size: the number of samples (any size: nothing is stored).
        seed: train only (default 0); val and test are fixed sets and refuse a seed.
        tiers: sample ``i`` is of tier ``tiers[i % len(tiers)]`` (default: all five, balanced);
            repeat a tier to weight it.

    Raises:
        ValueError: an unknown split or tier, a negative size or seed, or a seed for val/test.
    """

    name = "synthetic"

    def __init__(self, split: str = "train", size: int = 1000, seed: Optional[int] = None,
                 tiers: Sequence[str] = TIERS) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 0:
            raise ValueError(f"size must be a non-negative int, got {size!r}")
        if seed is not None and split != "train":
            raise ValueError(f"the {split} set is fixed; seed applies to train only, got seed={seed!r}")
        seed = 0 if seed is None else seed
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        tiers = tuple(tiers) if not isinstance(tiers, str) else (tiers,)
        bad = [t for t in tiers if t not in TIERS]
        if not tiers or bad:
            raise ValueError(f"tiers must be a non-empty list of {TIERS}, got {list(tiers)!r}")
        self.split, self.size, self.seed, self.tiers = split, int(size), int(seed), tiers

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Sample:
        i = operator.index(index)
        if i < 0:
            i += self.size
        if not 0 <= i < self.size:
            raise IndexError(f"index {index} out of range for {self.size} samples")
        return generate(self.split, self.seed, i, self.tiers[i % len(self.tiers)])

    def fingerprint(self) -> Dict[str, Any]:
        return {"name": self.name, "split": self.split, "seed": self.seed, "count": self.size,
                "tiers": list(self.tiers), "version": GENERATOR_VERSION}
