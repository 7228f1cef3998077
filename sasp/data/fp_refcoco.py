"""FP-RefCOCO, FP-RefCOCO+ and FP-RefCOCOg (false-premise referring queries) as SESAME reads them.

Layout (see-say-segment/sesame ``dataset/README.md``, ``dataloaders/refer.py``)::

    <root>/fprefcoco/refs(berkeley_exclude_unified).p    <root>/fprefcoco/instances.json
    <root>/fprefcoco+/refs(berkeley_exclude_unified).p   <root>/fprefcoco+/instances.json
    <root>/fprefcocog/refs(berkeley_exclude_unified).p   <root>/fprefcocog/instances.json
    <root>/images/mscoco/images/train2014/

Each sentence says whether its premise holds, as SESAME's ``process_referring_expressions``
reads it (``dataloaders/test_dataset.py``): ``is_false_premise`` when present (the premise
holds when it is false), else ``exist``, else the premise holds. A false-premise sentence has
``has_target`` False and an empty mask (SESAME zeroes it), and ``gt_sent``, the corrected
expression, in ``meta``. A true one is a RefCOCO sample: the ref's annotation (or the union
of a list of them) decoded with pycocotools.

Answers follow SESAME's templates (``dataloaders/qa_template.py``), the first of each list:
a true premise ``"Confirmed, here's the segmentation: [SEG]."``; a false one the correction
``"While the {query} is not present, the image does include {gt_sent}."``, or, without a
``gt_sent``, ``"No presence of {query} detected in this image."``.

Samples: one per (ref, sentence) of the split, refs file order; the query is ``sent``
stripped and lower-cased. SESAME evaluates the "val" split.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from .base import DatasetError
from .refer import PathLike, RefCOCOReader

TRUE_ANSWER = "Confirmed, here's the segmentation: [SEG]."
CORRECTION = "While the {query} is not present, the image does include {gt_sent}."
REFUSAL = "No presence of {query} detected in this image."


def premise_holds(sent: Dict[str, Any]) -> bool:
    """SESAME's reading of a sentence's premise flags."""
    if "is_false_premise" in sent:
        return not sent["is_false_premise"]
    if "exist" in sent:
        return bool(sent["exist"])
    return True


def fp_answer(query: str, holds: bool, gt_sent: str = "") -> str:
    """SESAME's answer (first template): the [SEG] answer, the correction or the refusal."""
    if holds:
        return TRUE_ANSWER
    gt_sent = gt_sent.strip().lower()
    return CORRECTION.format(query=query, gt_sent=gt_sent) if gt_sent else REFUSAL.format(query=query)


class FPRefCOCOReader(RefCOCOReader):
    """FP-RefCOCO(+/g): one ``Sample`` per (ref, sentence); false premises have no target.

    Args:
        root: the folder holding ``fprefcoco/``, ``fprefcoco+/``, ``fprefcocog/`` (SESAME's
            ``<dataset_dir>/refer_seg``).
        dataset: "fprefcoco", "fprefcoco+" or "fprefcocog".
        split: "val" (SESAME's evaluation split) or "train".
        split_by: refs file variant, default "berkeley_exclude_unified".
        image_dir: the COCO train2014 folder; default as ``RefCOCOReader``.

    ``meta`` adds ``is_false_premise`` and ``gt_sent`` (the corrected expression, "" if none).
    """

    name = "fprefcoco"
    DATASETS = {
        "fprefcoco": "berkeley_exclude_unified",
        "fprefcoco+": "berkeley_exclude_unified",
        "fprefcocog": "berkeley_exclude_unified",
    }

    def __init__(
        self,
        root: PathLike,
        dataset: str = "fprefcoco",
        split: str = "val",
        split_by: Optional[str] = None,
        image_dir: Optional[PathLike] = None,
    ) -> None:
        super().__init__(root, dataset=dataset, split=split, split_by=split_by, image_dir=image_dir)

    def _describe(self, ref: Dict[str, Any], sent: Dict[str, Any], query: str, has_target: bool) -> Tuple[bool, str, Dict[str, Any]]:
        gt_sent = sent.get("gt_sent", "")
        if not isinstance(gt_sent, str):
            raise DatasetError(f"{self.index_path}: ref {ref['ref_id']!r} has a gt_sent that is not a string")
        holds = premise_holds(sent) and has_target
        extra = {"is_false_premise": not premise_holds(sent), "gt_sent": gt_sent}
        return holds, fp_answer(query, holds, gt_sent), extra
