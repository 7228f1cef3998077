"""ReasonSeg (LISA's reasoning-segmentation benchmark): a folder of images and JSON files.

Layout (LISA's ``<dataset_dir>/reason_seg/ReasonSeg``)::

    <root>/val/<name>.jpg   <root>/val/<name>.json
    <root>/test/...         <root>/train/...

Each JSON holds ``text`` (the queries), ``is_sentence`` (a long reasoning sentence rather
than a short phrase; LISA's test "long query" subset) and ``shapes``: polygons (``points``
[[x, y], ...]) labelled "target", "ignore" or "flag".

Samples: one per image, sorted by file name, its query the *first* text stripped — exactly
what LISA's validation scores (``ValDataset.__getitem__`` in ``utils/dataset.py`` keeps
``sampled_sents[0]``; only ``*.jpg`` files count, as its glob). ``all_queries=True`` gives one
sample per (image, text) instead.

The mask is ``get_mask_from_json`` of LISA's ``utils/data_processing.py``, pixel for pixel:
"flag" shapes are skipped; the others are drawn from the largest to the smallest (area of
each polygon as drawn; ties: the later polygon first), with value 255 (``IGNORE``) when the
label contains "ignore", 1 otherwise; each polygon's vertices are truncated to integers and
painted as ``cv2.polylines`` + ``cv2.fillPoly`` paint them (``sasp.data._polygon`` reproduces
OpenCV 4.8, which LISA pins, exactly and without OpenCV; OpenCV 4.11 and later paint polygon
borders differently). Every shape is a polygon of its points whatever its
``shape_type``, as in LISA. The mask has the size of the image after its EXIF rotation (the
image OpenCV decodes).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, NamedTuple, Sequence, Tuple

import numpy as np

from ._polygon import MAX_COORD, polygon_patch
from .base import IGNORE, DatasetError, IndexedReader, SampleError
from .refer import ANSWER, PathLike


def _read_json(path: str) -> Any:
    """LISA reads the JSON as UTF-8 and falls back to cp1252; so do we (a BOM is allowed)."""
    with open(path, "rb") as f:
        raw = f.read()
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return json.loads(raw.decode(encoding))
        except (UnicodeDecodeError, ValueError):
            continue
    raise DatasetError(f"malformed JSON in {path}")


def image_size(path: str) -> Tuple[int, int]:
    """(height, width) of an image file after its EXIF orientation, from its header."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as err:
        raise ImportError("ReasonSeg masks take the image size from the file: pip install pillow") from err
    if not os.path.isfile(path):
        raise SampleError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise SampleError(f"cannot read {path} as an image ({type(err).__name__}: {err})") from None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def _vertices(points: Any, where: str) -> np.ndarray:
    """int64 [N, 2], truncated towards zero as ``np.array(points, dtype=np.int32)`` does."""
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise SampleError(f"{where}: points are not a list of [x, y] numbers") from None
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise SampleError(f"{where}: points must be [[x, y], ...] with at least one point, got shape {arr.shape}")
    if not np.isfinite(arr).all() or np.abs(arr).max() >= MAX_COORD:
        raise SampleError(f"{where}: a point is NaN, infinite or beyond {MAX_COORD}")
    return np.trunc(arr).astype(np.int64)


def reasonseg_mask(shapes: Sequence[Any], height: int, width: int, where: str = "shapes") -> np.ndarray:
    """LISA's ``get_mask_from_json`` mask, uint8 [H, W]: 1 target, ``IGNORE`` ignored, 0 else.

    Raises ``SampleError`` naming ``where`` for a shape without a string label or valid points.
    """
    if not isinstance(shapes, (list, tuple)):
        raise SampleError(f"{where}: 'shapes' is not a list")
    drawn: List[Tuple[int, int, int, np.ndarray]] = []
    areas: List[int] = []
    for k, shape in enumerate(shapes):
        if not isinstance(shape, dict) or not isinstance(shape.get("label"), str):
            raise SampleError(f"{where}: shape {k} has no string 'label'")
        label = shape["label"].lower()
        if label == "flag":  # LISA: "meaningless deprecated annotations"
            continue
        top, left, patch = polygon_patch(_vertices(shape.get("points"), f"{where}: shape {k}"), height, width)
        drawn.append((IGNORE if "ignore" in label else 1, top, left, patch))
        areas.append(int(patch.sum()))
    mask = np.zeros((height, width), np.uint8)
    for i in np.argsort(np.asarray(areas, np.int64), kind="stable")[::-1]:
        value, top, left, patch = drawn[i]
        mask[top : top + patch.shape[0], left : left + patch.shape[1]][patch] = value
    return mask


class _Item(NamedTuple):
    id: str
    image: str
    query: str
    meta: Dict[str, Any]
    shapes: Any  # the JSON's "shapes", checked when the mask is drawn
    has_target: bool = True
    answer: str = ANSWER


class ReasonSegReader(IndexedReader):
    """ReasonSeg: one ``Sample`` per image (or per (image, text) with ``all_queries``).

    Args:
        root: the ReasonSeg folder (holding ``train/``, ``val/``, ``test/``).
        split: "val", "test" or "train" (any sub-folder of ``root``).
        all_queries: one sample per text of each image instead of the first text only.

    Raises:
        DatasetError: the split folder is missing or holds no ``*.jpg``, or an image's JSON is
            missing or has no ``text`` / ``is_sentence`` (the message names the file).

    ``meta``: ``is_sentence`` (LISA's long/short query split), ``query_index``, ``num_queries``,
    ``json``. ``target()`` raises ``SampleError`` for a missing image or a broken shape.
    """

    name = "reasonseg"
    fingerprint_fields = ("root", "dataset", "split", "all_queries")

    def __init__(self, root: PathLike, split: str = "val", all_queries: bool = False) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.dataset, self.split, self.all_queries = "ReasonSeg", split, bool(all_queries)
        folder = os.path.join(self.root, split)
        if not os.path.isdir(folder):
            raise DatasetError(f"ReasonSeg split folder not found: {folder}")
        names = sorted(n for n in os.listdir(folder) if n.endswith(".jpg"))
        if not names:
            raise DatasetError(f"no *.jpg images in {folder}")
        self._items: List[_Item] = []
        for name in names:
            stem = name[: -len(".jpg")]
            json_path = os.path.join(folder, stem + ".json")
            if not os.path.isfile(json_path):
                raise DatasetError(f"missing annotation file: {json_path}")
            anno = _read_json(json_path)
            texts = anno.get("text") if isinstance(anno, dict) else None
            texts = [texts] if isinstance(texts, str) else texts
            if not texts or not all(isinstance(t, str) for t in texts):
                raise DatasetError(f"{json_path}: 'text' is not a non-empty list of strings")
            if "is_sentence" not in anno:
                raise DatasetError(f"{json_path}: no 'is_sentence'")
            shapes = anno.get("shapes")
            chosen = range(len(texts)) if self.all_queries else range(1)
            for q in chosen:
                sample_id = f"ReasonSeg/{split}/{stem}" + (f"/q{q}" if self.all_queries else "")
                meta = {
                    "dataset": self.dataset,
                    "split": split,
                    "is_sentence": bool(anno["is_sentence"]),
                    "query_index": q,
                    "num_queries": len(texts),
                    "json": json_path,
                }
                self._items.append(_Item(sample_id, os.path.join(folder, name), texts[q].strip(), meta, shapes))

    def _target(self, index: int) -> np.ndarray:
        item = self._items[index]
        h, w = image_size(item.image)
        return reasonseg_mask(item.shapes, h, w, f"{item.id} ({item.meta['json']})")

