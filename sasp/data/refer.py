"""RefCOCO, RefCOCO+ and RefCOCOg in refer's layout (lichengunc/refer), read as LISA validates.

Layout (the one LISA, GSVA and SESAME read)::

    <root>/refcoco/refs(unc).p     <root>/refcoco/instances.json
    <root>/refcoco+/refs(unc).p    <root>/refcoco+/instances.json
    <root>/refcocog/refs(umd).p    <root>/refcocog/instances.json
    <root>/images/mscoco/images/train2014/COCO_train2014_*.jpg   (or <root>/images/train2014)

Samples: one per (ref, sentence) of the split, as LISA's ``ValDataset`` (``utils/dataset.py``)
scores every sentence of every ref; ordered as the refs file lists the refs, then as each ref
lists its sentences. The query is the sentence's ``sent`` stripped and lower-cased, as LISA
feeds it (refer's ``sent`` is lower-case already; ``raw`` is kept in ``meta``). The target is
the referred annotation decoded with pycocotools (polygons or RLE); LISA's validation decodes
the same annotation (see ``sasp.data._coco`` for the checks and the one difference: overlapping
polygons of one annotation are merged, not summed).

Splits: refcoco and refcoco+ (``unc``): train, val, testA, testB; refcocog (``umd``): train,
val, test; ``split_by="google"`` reads refcocog's ``refs(google).p``.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Union

import numpy as np

from ._coco import decode_segmentation, image_folder, load_json, load_pickle
from .base import DatasetError, IndexedReader, SampleError

PathLike = Union[str, "os.PathLike[str]"]

ANSWER = "Sure, [SEG]."
"""The answer of a referring query: LISA's second training answer (``ANSWER_LIST``)."""

IMAGE_DIRS = ("images/mscoco/images/train2014", "images/train2014")
"""Where the COCO train2014 images are looked for under ``root`` (LISA's, then G_REFER's)."""


class _Item(NamedTuple):
    id: str
    image: str
    query: str
    has_target: bool
    answer: Optional[str]
    meta: Dict[str, Any]
    ann_ids: Optional[List[int]]  # None: no target
    problem: Optional[str]  # set: target() raises SampleError with it


class RefCOCOReader(IndexedReader):
    """RefCOCO / RefCOCO+ / RefCOCOg: one ``Sample`` per (ref, sentence) of a split.

    Args:
        root: the folder holding ``refcoco/``, ``refcoco+/``, ``refcocog/`` (LISA's
            ``<dataset_dir>/refer_seg``).
        dataset: "refcoco", "refcoco+" or "refcocog".
        split: "val", "testA", "testB", "test" or "train", as the refs file names them.
        split_by: refs file variant; default "unc" (refcocog: "umd").
        image_dir: the COCO train2014 folder; default ``IMAGE_DIRS`` under ``root``.

    Raises:
        DatasetError: a missing or malformed index file, an unknown split (the message names
            the file); checked here, once.

    ``reader[i].target()`` decodes the mask (uint8 [H, W], 1 = referred object) and raises
    ``SampleError`` for a broken or missing annotation; ``reader[i].image`` is the image path.
    """

    name = "refcoco"
    fingerprint_fields = ("root", "dataset", "split", "split_by")
    DATASETS: Dict[str, str] = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}

    def __init__(
        self,
        root: PathLike,
        dataset: str = "refcoco",
        split: str = "val",
        split_by: Optional[str] = None,
        image_dir: Optional[PathLike] = None,
    ) -> None:
        if dataset not in self.DATASETS:
            raise DatasetError(f"unknown dataset {dataset!r}; expected one of {', '.join(self.DATASETS)}")
        self.root = os.path.abspath(os.fspath(root))
        self.dataset, self.split = dataset, split
        self.split_by = split_by or self.DATASETS[dataset]
        if not os.path.isdir(self.root):
            raise DatasetError(f"dataset root not found: {self.root}")
        folder = os.path.join(self.root, dataset)
        self.index_path, refs = self._read_refs(folder)
        refs = self._select(refs)
        instances_path = os.path.join(folder, "instances.json")
        if not os.path.isfile(instances_path):
            raise DatasetError(f"missing index file: {instances_path}")
        self.image_dir = image_folder(self.root, None if image_dir is None else os.fspath(image_dir), IMAGE_DIRS)
        images, self._anns = _read_instances(instances_path, refs)  # the slow part, last
        self._items: List[_Item] = []
        for ref in refs:
            image = images.get(ref["image_id"])
            if image is None:
                raise DatasetError(f"{instances_path}: no image {ref['image_id']!r} (ref {ref['ref_id']!r})")
            for j, sent in enumerate(ref["sentences"]):
                self._items.append(self._item(ref, j, sent, image))

    # -- hooks the gRefCOCO and FP-RefCOCO readers override -------------------------------

    def _read_refs(self, folder: str) -> Tuple[str, Any]:
        path = os.path.join(folder, f"refs({self.split_by}).p")
        return path, load_pickle(path)

    def _target_ids(self, ref: Dict[str, Any]) -> Tuple[Optional[List[int]], Optional[str]]:
        """(annotation ids whose union is the target, or None for no target; a problem that
        makes ``target()`` raise, or None)."""
        ids = ref["ann_id"] if isinstance(ref["ann_id"], list) else [ref["ann_id"]]
        if ids == [-1]:  # the no-target convention of gRefCOCO and SESAME's loaders
            return None, None
        if -1 in ids:
            return ids, f"ann_id {ids} mixes -1 (no target) with annotation ids"
        return ids, None

    def _describe(
        self, ref: Dict[str, Any], sent: Dict[str, Any], query: str, has_target: bool
    ) -> Tuple[bool, Optional[str], Dict[str, Any]]:
        """(has_target, answer, extra meta) of one sentence."""
        return has_target, (ANSWER if has_target else None), {}

    # -- internals ----------------------------------------------------------------------------

    def _select(self, refs: Any) -> List[Dict[str, Any]]:
        path = self.index_path
        if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
            raise DatasetError(f"{path}: expected a list of refs (dicts)")
        splits: List[str] = []
        for r in refs:
            if r.get("split") not in splits:
                splits.append(r.get("split"))
        if self.split not in splits:
            raise DatasetError(f"{path}: no split {self.split!r} (has {', '.join(map(str, splits))})")
        chosen = [r for r in refs if r.get("split") == self.split]
        for k, r in enumerate(chosen):
            for key in ("ref_id", "image_id", "ann_id", "sentences"):
                if key not in r:
                    raise DatasetError(f"{path}: ref {r.get('ref_id', '#' + str(k))!r} has no {key!r}")
            ids = r["ann_id"] if isinstance(r["ann_id"], list) else [r["ann_id"]]
            if not ids or not all(isinstance(a, int) and not isinstance(a, bool) for a in ids):
                raise DatasetError(f"{path}: ref {r['ref_id']!r} has ann_id {r['ann_id']!r}, not an int or a list of ints")
            sents = r["sentences"]
            if not isinstance(sents, list) or not all(isinstance(s, dict) and isinstance(s.get("sent"), str) for s in sents):
                raise DatasetError(f"{path}: ref {r['ref_id']!r} has sentences without a 'sent' string")
        return chosen

    def _item(self, ref: Dict[str, Any], j: int, sent: Dict[str, Any], image: Dict[str, Any]) -> _Item:
        query = sent["sent"].strip().lower()
        ids, problem = self._target_ids(ref)
        has_target, answer, extra = self._describe(ref, sent, query, ids is not None)
        meta: Dict[str, Any] = {
            "dataset": self.dataset,
            "split": self.split,
            "split_by": self.split_by,
            "ref_id": ref["ref_id"],
            "sent_id": sent.get("sent_id"),
            "sent_index": j,
            "raw": sent.get("raw"),
            "image_id": ref["image_id"],
            "ann_id": ref["ann_id"],
            "category_id": ref.get("category_id"),
            "height": image["height"],
            "width": image["width"],
        }
        meta.update(extra)
        sample_id = f"{self.dataset}/{self.split}/ref{ref['ref_id']}/sent{j}"
        path = os.path.join(self.image_dir, image["file_name"])
        return _Item(sample_id, path, query, has_target, answer, meta, ids if has_target else None, problem)

    def _target(self, index: int) -> np.ndarray:
        item = self._items[index]
        sample_id, meta, ids = item.id, item.meta, item.ann_ids
        if item.problem is not None:
            raise SampleError(f"{sample_id}: {item.problem}")
        h, w = meta["height"], meta["width"]
        out = np.zeros((h, w), np.uint8)
        for ann_id in ids or ():
            ann = self._anns.get(ann_id)
            if ann is None:
                raise SampleError(f"{sample_id}: annotation {ann_id} is not in instances.json")
            if ann.get("image_id", meta["image_id"]) != meta["image_id"]:
                raise SampleError(f"{sample_id}: annotation {ann_id} belongs to image {ann.get('image_id')!r}, not {meta['image_id']!r}")
            out |= decode_segmentation(ann.get("segmentation"), h, w, f"{sample_id}: annotation {ann_id}")
        return out



def _read_instances(path: str, refs: List[Dict[str, Any]]) -> Tuple[Dict[Any, Dict[str, Any]], Dict[int, Dict[str, Any]]]:
    """instances.json's images (id -> {file_name, height, width}) and the annotations the refs
    point at (id -> annotation), checked."""
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise DatasetError(f"{path}: expected a dict with 'images' and 'annotations' lists")
    wanted_images = {r["image_id"] for r in refs}
    images: Dict[Any, Dict[str, Any]] = {}
    for img in data["images"]:
        if not isinstance(img, dict) or img.get("id") not in wanted_images:
            continue
        h, w, name = img.get("height"), img.get("width"), img.get("file_name")
        if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 and isinstance(name, str)):
            raise DatasetError(f"{path}: image {img.get('id')!r} lacks a file_name or a positive height and width")
        images[img["id"]] = {"file_name": name, "height": h, "width": w}
    wanted_anns = set()
    for r in refs:
        wanted_anns.update(r["ann_id"] if isinstance(r["ann_id"], list) else [r["ann_id"]])
    anns = {a["id"]: a for a in data["annotations"] if isinstance(a, dict) and a.get("id") in wanted_anns}
    return images, anns
