"""Shared helpers of the RefCOCO-family readers: index files and COCO segmentations.

Masks are decoded by pycocotools (``frPyObjects`` / ``merge`` / ``decode``), as LISA, GSVA
and SESAME decode them; this module only checks an annotation before handing it over, so that
a broken one raises ``SampleError`` instead of a pycocotools crash or a wrong mask:

* polygons (``[[x0, y0, x1, y1, ...], ...]``): finite numbers; polygons with fewer than three
  points (or an odd number of coordinates) are dropped, as GSVA and detectron2 drop them
  (pycocotools would read a four-number polygon as a box); none left is an error;
* RLE (``{"size": [h, w], "counts": ...}``, uncompressed list or compressed string, or a list
  of them): ``size`` must equal the image's size and the run lengths must sum to ``h * w``
  (pycocotools decodes past the buffer otherwise).

Overlapping polygons of one annotation are merged (union), as ``COCO.annToMask`` does; LISA's
``np.sum`` over the decoded polygons would write 2 where they overlap.
"""
from __future__ import annotations

import io
import json
import math
import os
import pickle
import warnings
from typing import Any, Iterable, List, Optional, Sequence

import numpy as np

from .base import DatasetError, SampleError

_MAX_COORD = float(1 << 20)


def _mask_api() -> Any:
    try:
        from pycocotools import mask as mask_api
    except ImportError as err:
        raise ImportError("the RefCOCO-family readers decode masks with pycocotools: pip install pycocotools") from err
    return mask_api


def load_json(path: str) -> Any:
    """The parsed JSON file, or ``DatasetError`` naming it."""
    if not os.path.isfile(path):
        raise DatasetError(f"missing index file: {path}")
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8-sig"))
    except (ValueError, UnicodeDecodeError) as err:
        raise DatasetError(f"malformed JSON in {path}: {err}") from None


class _PlainUnpickler(pickle.Unpickler):
    """Builds only lists, dicts, strings and numbers (what refer's ``refs(*).p`` hold): a
    pickle that names any class or function is refused instead of run."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refuses to load {module}.{name}")


def load_pickle(path: str) -> Any:
    """refer's ``refs(<split_by>).p`` (written by Python 2), or ``DatasetError`` naming it."""
    if not os.path.isfile(path):
        raise DatasetError(f"missing index file: {path}")
    with open(path, "rb") as f:
        data = f.read()
    for encoding in ("ASCII", "latin1"):
        try:
            return _PlainUnpickler(io.BytesIO(data), encoding=encoding).load()
        except UnicodeDecodeError:
            continue
        except Exception as err:  # pickle raises many types on a corrupt stream
            raise DatasetError(f"malformed pickle {path}: {type(err).__name__}: {err}") from None
    raise DatasetError(f"malformed pickle {path}: undecodable strings")


def image_folder(root: str, image_dir: Optional[str], candidates: Sequence[str]) -> str:
    """``image_dir`` if given, else the first of ``root/<candidate>`` that exists."""
    if image_dir is not None:
        if not os.path.isdir(image_dir):
            raise DatasetError(f"image folder not found: {image_dir}")
        return os.fspath(image_dir)
    for c in candidates:
        path = os.path.join(root, c)
        if os.path.isdir(path):
            return path
    raise DatasetError(f"image folder not found: {os.path.join(root, candidates[0])} (or pass image_dir=)")


def _counts_sum(counts: bytes) -> Optional[int]:
    """The run lengths of a compressed COCO RLE string summed, or None when the string is not
    one (pycocotools' ``rleFrString`` format: 6-bit groups from '0', runs after the third
    stored as differences to the run two before)."""
    runs: List[int] = []
    p, n = 0, len(counts)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                return None
            c = counts[p] - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        if x < 0 or x >= 1 << 32:
            return None
        runs.append(x)
    return sum(runs)


def _check_rle(rle: Any, height: int, width: int, where: str) -> dict:
    """A pycocotools-ready RLE dict (compressed) from one RLE object, checked."""
    if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
        raise SampleError(f"{where}: segmentation is neither polygons nor an RLE dict")
    size = rle["size"]
    if not isinstance(size, (list, tuple)) or [int(v) for v in size] != [height, width]:
        raise SampleError(f"{where}: RLE size {size} differs from the image's [{height}, {width}]")
    counts = rle["counts"]
    if isinstance(counts, list):
        if not all(isinstance(v, int) and v >= 0 for v in counts) or sum(counts) != height * width:
            raise SampleError(f"{where}: uncompressed RLE counts are not non-negative runs summing to {height * width}")
        return _mask_api().frPyObjects({"size": [height, width], "counts": counts}, height, width)
    if isinstance(counts, str):
        counts = counts.encode("ascii", "replace")
    if not isinstance(counts, bytes) or _counts_sum(counts) != height * width:
        raise SampleError(f"{where}: compressed RLE counts are malformed or do not cover {height}x{width} pixels")
    return {"size": [height, width], "counts": counts}


def _polygons(segm: Sequence[Any], where: str) -> List[List[float]]:
    polys = []
    for poly in segm:
        if not isinstance(poly, (list, tuple)):
            raise SampleError(f"{where}: a polygon is {type(poly).__name__}, not a list of numbers")
        try:
            coords = [float(v) for v in poly]
        except (TypeError, ValueError):
            raise SampleError(f"{where}: a polygon holds non-numbers") from None
        if not all(math.isfinite(v) and abs(v) < _MAX_COORD for v in coords):
            raise SampleError(f"{where}: a polygon coordinate is NaN, infinite or beyond {_MAX_COORD:g}")
        if len(coords) >= 6 and len(coords) % 2 == 0:
            polys.append(coords)
    if not polys:
        raise SampleError(f"{where}: no polygon with three or more points")
    return polys


def decode_segmentation(segm: Any, height: int, width: int, where: str) -> np.ndarray:
    """One COCO annotation's ``segmentation`` as a uint8 [H, W] mask of 0/1.

    An empty list gives an empty mask (LISA, GSVA and SESAME do the same). Raises
    ``SampleError`` naming ``where`` for anything pycocotools would misread.
    """
    if isinstance(segm, (list, tuple)) and len(segm) == 0:
        return np.zeros((height, width), np.uint8)
    api = _mask_api()
    if isinstance(segm, dict):
        rles = [_check_rle(segm, height, width, where)]
    elif isinstance(segm, (list, tuple)) and all(isinstance(s, dict) for s in segm):
        rles = [_check_rle(s, height, width, where) for s in segm]
    elif isinstance(segm, (list, tuple)):
        rles = api.frPyObjects(_polygons(segm, where), height, width)
    else:
        raise SampleError(f"{where}: segmentation is {type(segm).__name__}, not polygons or RLE")
    rle = rles[0] if len(rles) == 1 else api.merge(rles, intersect=False)
    with warnings.catch_warnings():  # pycocotools' own array type under numpy 2
        warnings.filterwarnings("ignore", message=".*__array__ implementation", category=DeprecationWarning)
        m = api.decode(rle)
    return np.ascontiguousarray(m, dtype=np.uint8)


def union_mask(segms: Iterable[Any], height: int, width: int, wheres: Iterable[str]) -> np.ndarray:
    """The union of several annotations' masks, uint8 [H, W] of 0/1."""
    out = np.zeros((height, width), np.uint8)
    for segm, where in zip(segms, wheres):
        out |= decode_segmentation(segm, height, width, where)
    return out
