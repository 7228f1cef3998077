"""gRefCOCO (generalised referring expressions) as GSVA reads and validates it.

Layout (GSVA's ``data/grefer.py``, ``G_REFER``)::

    <root>/grefcoco/grefs(unc).json   (or grefs(unc).p, which G_REFER prefers when present)
    <root>/grefcoco/instances.json
    <root>/images/mscoco/images/train2014/   (GSVA's ValDataset; or <root>/images/train2014)

Each ref's ``ann_id`` is a list: one id (single target), several (multi-target: the target is
the union of the instances, as GSVA's ``ValDataset`` sums them and binarises), or ``[-1]``
(no target: ``has_target`` False, an empty mask). The file's ``no_target`` flag is kept in
``meta``; GSVA decides by ``ann_id == [-1]`` and so do we, and ``target()`` raises
``SampleError`` when the two disagree or when -1 sits among other ids.

Samples: one per (ref, sentence), in file order; the query is ``sent`` stripped and
lower-cased (GSVA's validation). The answer is GSVA's validation answer for one expression,
verbatim: ``"Sure,{expression}:[SEG]."``, or ``"Sure,{expression}:[REJ]."`` without a target,
the expression stripped of a final period (``data/dataset.py``, ``ValDataset.__getitem__``).

Differences from GSVA's loader: crowd annotations are kept as GSVA's validation keeps them;
an annotation whose polygons all have fewer than three points raises ``SampleError`` (GSVA
silently leaves that instance out).
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

from ._coco import load_json, load_pickle
from .base import DatasetError
from .refer import PathLike, RefCOCOReader


def grefcoco_answer(query: str, has_target: bool) -> str:
    """GSVA's validation answer for one expression: ``Sure,{expr}:[SEG].`` / ``...:[REJ].``"""
    return f"Sure,{query.strip().strip('.')}:{'[SEG]' if has_target else '[REJ]'}."


class GRefCOCOReader(RefCOCOReader):
    """gRefCOCO: one ``Sample`` per (ref, sentence); multi-target and no-target expressions.

    Args:
        root: the folder holding ``grefcoco/`` (GSVA's ``<dataset_dir>/refer_seg``).
        split: "val", "testA", "testB" or "train".
        split_by: index file variant, default "unc".
        image_dir: the COCO train2014 folder; default as ``RefCOCOReader``.

    ``meta`` carries GSVA's fields: ``ann_id`` (the list, ``[-1]`` for no target),
    ``no_target`` (the file's flag), ``category_id``, ``ref_id``, ``sent_id``, and
    ``target_type`` ("no-target", "single-target" or "multi-target").
    """

    name = "grefcoco"
    DATASETS = {"grefcoco": "unc"}

    def __init__(
        self,
        root: PathLike,
        split: str = "val",
        split_by: str = "unc",
        image_dir: Optional[PathLike] = None,
    ) -> None:
        super().__init__(root, dataset="grefcoco", split=split, split_by=split_by, image_dir=image_dir)

    def _read_refs(self, folder: str) -> Tuple[str, Any]:
        pickled = os.path.join(folder, f"grefs({self.split_by}).p")
        if os.path.isfile(pickled):
            return pickled, load_pickle(pickled)
        path = os.path.join(folder, f"grefs({self.split_by}).json")
        if not os.path.isfile(path):
            raise DatasetError(f"missing index file: {path} (nor {os.path.basename(pickled)})")
        return path, load_json(path)

    def _target_ids(self, ref: Dict[str, Any]) -> Tuple[Optional[List[int]], Optional[str]]:
        ids, problem = super()._target_ids(ref)
        flag = ref.get("no_target")
        if problem is None and ids is None and flag is False:
            problem = "ann_id is [-1] but no_target is false"
        if problem is None and ids is not None and flag is True:
            problem = f"no_target is true but ann_id is {ids}"
        return ids, problem

    def _describe(self, ref: Dict[str, Any], sent: Dict[str, Any], query: str, has_target: bool) -> Tuple[bool, str, Dict[str, Any]]:
        ids = ref["ann_id"] if isinstance(ref["ann_id"], list) else [ref["ann_id"]]
        kind = "no-target" if not has_target else ("single-target" if len(ids) == 1 else "multi-target")
        extra = {"no_target": ref.get("no_target", not has_target), "target_type": kind}
        return has_target, grefcoco_answer(query, has_target), extra
