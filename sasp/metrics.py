"""Referring / reasoning segmentation metrics: gIoU, cIoU, N-acc / T-acc and "see" accuracy.

Every definition matches a public evaluation script, named where it is implemented:

- Per mask (LISA ``utils/utils.py::intersectionAndUnionGPU(pred, target, 2, ignore_index=255)``):
  pixels where the target equals ``ignore_index`` count in neither the intersection nor the
  union. I = |pred AND target|, U = |pred OR target| over the remaining pixels.
- gIoU (LISA ``train_ds.py::validate``): the per-mask terms I / (U + 1e-5), where a mask with
  U = 0 (an empty prediction on an empty target) scores 1.0 (``acc_iou[union_i == 0] += 1.0``),
  summed and divided by (count + 1e-5): LISA's ``AverageMeter.all_reduce`` sets
  ``avg = sum / (count + 1e-5)``, and ``validate`` reports that ``avg``.
- cIoU (same function): (sum of I) / (sum of U + 1e-10).
- gRefCOCO (GSVA ``solver.py::eval_gres``): a sample whose target is empty scores 1 in gIoU
  when the model rejects it (no [SEG]) and 0 otherwise, whatever its mask; it adds nothing
  to cIoU's intersection, and its predicted area to cIoU's union only when the model did not
  reject it. Samples with a target score I / (U + 1e-8). N-acc = rejected / no-target
  samples, T-acc = not rejected / has-target samples. See ``sample_scores(protocol="gsva")``
  and ``nt_accuracy``.
- see accuracy (SESAME ``eval_sesame.py::run_eval``): the fraction of queries whose predicted
  "object present" flag equals the ground truth's; SESAME's flag is "the answer has a [SEG]
  and its mask is not empty" (``model/SESAME.py::evaluate``), see ``sesame_exists``.

The epsilons are theirs, so numbers agree with their logs to float precision; pass
``eps=0, count_eps=0`` for the exact ratios. Predictions must already be binary: LISA
thresholds logits at 0 (``pred_masks > 0``), other pipelines threshold sigmoid outputs at 0.5,
so this module does not guess.

Example:
    >>> m = SegMetrics()
    >>> for pred, gt in loader:                       # [N, H, W] bool / {0, 1, 255}
    ...     m.update(pred, gt)
    >>> m.compute()                                   # {'giou': ..., 'ciou': ..., ...}
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

ArrayLike = Union[Tensor, np.ndarray]

IGNORE_INDEX = 255
GIOU_EPS = 1e-5
"""LISA's per-mask epsilon: I / (U + 1e-5)."""
CIOU_EPS = 1e-10
"""LISA's, GSVA's and SESAME's cIoU epsilon: sum(I) / (sum(U) + 1e-10)."""
COUNT_EPS = 1e-5
"""LISA's and GSVA's ``AverageMeter.all_reduce``: gIoU = sum / (count + 1e-5)."""
GSVA_GIOU_EPS = 1e-8
"""GSVA's ``eval_gres`` per-mask epsilon for samples with a target: I / (U + 1e-8)."""
PROTOCOLS = ("lisa", "gsva")
"""How ``sample_scores`` treats empty targets: LISA's ``validate`` or GSVA's ``eval_gres``."""


def _as_masks(x: ArrayLike, name: str) -> Tensor:
    t = torch.as_tensor(x).detach().cpu()
    if t.is_floating_point():
        if not bool(((t == 0) | (t == 1)).all()):
            raise ValueError(
                f"{name} holds non-binary floats; threshold first (LISA uses logits > 0, "
                "sigmoid outputs use > 0.5)"
            )
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() != 3:
        raise ValueError(f"{name} must be [H, W] or [N, H, W], got shape {tuple(t.shape)}")
    return t


def intersection_union(
    pred: ArrayLike, target: ArrayLike, ignore_index: Optional[int] = IGNORE_INDEX
) -> Tuple[Tensor, Tensor]:
    """Per-mask foreground intersection and union, LISA's ``intersectionAndUnionGPU`` class 1.

    Args:
        pred (Tensor | ndarray): [N, H, W] or [H, W] binary prediction (bool or 0/1).
        target (Tensor | ndarray): same shape; 1 = object, 0 = background, ``ignore_index``
            = not scored (the prediction there is ignored too).
        ignore_index (int | None): target value excluded from both counts (255).

    Returns:
        (Tensor, Tensor): intersection [N] and union [N], int64 pixel counts.
    """
    p, t = _as_masks(pred, "pred"), _as_masks(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred {tuple(p.shape)} and target {tuple(t.shape)} must have the same shape")
    p_bin = p != 0
    if ignore_index is not None:
        scored = t != ignore_index
        t_bin = (t != 0) & scored
        p_bin = p_bin & scored
    else:
        t_bin = t != 0
    inter = (p_bin & t_bin).flatten(1).sum(-1)
    union = (p_bin | t_bin).flatten(1).sum(-1)
    return inter.long(), union.long()


def count_intersection_union(pred: np.ndarray, target: np.ndarray, ignore_index: Optional[int] = IGNORE_INDEX) -> Tuple[int, int]:
    """``intersection_union`` of one mask pair [H, W] in numpy, without torch (the per-sample
    path of an evaluation loop). pred: bool or 0/1 [H, W]; target: {0, 1, ignore_index}."""
    p = np.asarray(pred)
    t = np.asarray(target)
    if p.ndim != 2 or p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and target {t.shape} must be the same [H, W] shape")
    if p.dtype.kind == "f" and not np.isin(p, (0.0, 1.0)).all():
        raise ValueError("pred holds non-binary floats; threshold first (LISA uses logits > 0, sigmoid outputs use > 0.5)")
    p = p.astype(bool, copy=False)
    t_bin = t != 0
    if ignore_index is not None:
        ignored = t == ignore_index
        if ignored.any():
            t_bin &= ~ignored
            p = p & ~ignored
    inter = int(np.count_nonzero(p & t_bin))
    return inter, int(np.count_nonzero(p)) + int(np.count_nonzero(t_bin)) - inter


def mask_iou(inter: ArrayLike, union: ArrayLike, eps: float = GIOU_EPS) -> Tensor:
    """Per-mask IoU as LISA scores it: I / (U + eps), and 1.0 where U == 0. float64 [N]."""
    i = torch.as_tensor(inter, dtype=torch.float64)
    u = torch.as_tensor(union, dtype=torch.float64)
    return torch.where(u == 0, torch.ones_like(u), i / (u + eps))


def giou(
    pred: ArrayLike,
    target: ArrayLike,
    ignore_index: Optional[int] = IGNORE_INDEX,
    eps: float = GIOU_EPS,
    count_eps: float = COUNT_EPS,
) -> float:
    """gIoU of one batch of masks [N, H, W]: sum of the per-mask IoUs / (N + count_eps)."""
    inter, union = intersection_union(pred, target, ignore_index)
    if inter.numel() == 0:
        raise ValueError("gIoU of zero masks is undefined")
    return float(mask_iou(inter, union, eps).sum() / (inter.numel() + count_eps))


def ciou(pred: ArrayLike, target: ArrayLike, ignore_index: Optional[int] = IGNORE_INDEX, eps: float = CIOU_EPS) -> float:
    """cIoU of one batch of masks [N, H, W]: sum of intersections over sum of unions."""
    inter, union = intersection_union(pred, target, ignore_index)
    return float(inter.sum().double() / (union.sum().double() + eps))


def see_accuracy(pred_exists: Iterable[bool], gt_exists: Iterable[bool]) -> float:
    """SESAME's "see" accuracy: the fraction of queries where pred_exists == gt_exists."""
    p = np.asarray(list(pred_exists), dtype=bool)
    g = np.asarray(list(gt_exists), dtype=bool)
    if p.shape != g.shape:
        raise ValueError(f"pred_exists has {p.size} entries, gt_exists {g.size}")
    if p.size == 0:
        raise ValueError("see accuracy of zero queries is undefined")
    return float((p == g).mean())


class SegMetrics:
    """Accumulates gIoU, cIoU and see accuracy over a dataset of differently sized images.

    ``update`` takes the masks of one image (or one batch of equal size); ``compute`` returns
    ``{"giou", "ciou", "see_acc", "num_masks", "num_queries"}`` (``see_acc`` is None when no
    existence flags were given).
    """

    def __init__(
        self,
        ignore_index: Optional[int] = IGNORE_INDEX,
        giou_eps: float = GIOU_EPS,
        ciou_eps: float = CIOU_EPS,
        count_eps: float = COUNT_EPS,
    ):
        self.ignore_index = ignore_index
        self.giou_eps = giou_eps
        self.ciou_eps = ciou_eps
        self.count_eps = count_eps
        self.reset()

    def reset(self) -> None:
        self._iou_sum = 0.0
        self._num_masks = 0
        self._inter = 0
        self._union = 0
        self._see_correct = 0
        self._num_queries = 0

    def update(
        self,
        pred: Optional[ArrayLike] = None,
        target: Optional[ArrayLike] = None,
        pred_exists: Optional[Sequence[bool]] = None,
        gt_exists: Optional[Sequence[bool]] = None,
    ) -> None:
        """Add masks ([N, H, W] or [H, W]) and/or existence flags ([Q] booleans)."""
        if (pred is None) != (target is None):
            raise ValueError("pass both pred and target masks, or neither")
        if pred is not None:
            inter, union = intersection_union(pred, target, self.ignore_index)
            self._iou_sum += float(mask_iou(inter, union, self.giou_eps).sum())
            self._num_masks += int(inter.numel())
            self._inter += int(inter.sum())
            self._union += int(union.sum())
        if (pred_exists is None) != (gt_exists is None):
            raise ValueError("pass both pred_exists and gt_exists, or neither")
        if pred_exists is not None:
            p = np.asarray(list(pred_exists), dtype=bool)
            g = np.asarray(list(gt_exists), dtype=bool)
            if p.shape != g.shape:
                raise ValueError(f"pred_exists has {p.size} entries, gt_exists {g.size}")
            self._see_correct += int((p == g).sum())
            self._num_queries += int(p.size)

    def compute(self) -> Dict[str, Optional[float]]:
        return {
            "giou": self._iou_sum / (self._num_masks + self.count_eps) if self._num_masks else None,
            "ciou": self._inter / (self._union + self.ciou_eps) if self._num_masks else None,
            "see_acc": self._see_correct / self._num_queries if self._num_queries else None,
            "num_masks": self._num_masks,
            "num_queries": self._num_queries,
        }


# --------------------------------------------------------------------------- per-sample rows


def _flags(x: Iterable[bool], name: str, n: int) -> np.ndarray:
    a = np.asarray(list(x) if not isinstance(x, np.ndarray) else x, dtype=bool).reshape(-1)
    if a.size != n:
        raise ValueError(f"{name} has {a.size} entries, expected {n}")
    return a


def sample_scores(
    inter: Sequence[int],
    union: Sequence[int],
    target_empty: Sequence[bool],
    pred_has_object: Sequence[bool],
    protocol: str = "lisa",
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sample gIoU terms and cIoU contributions of a protocol.

    Args:
        inter, union: [N] per-sample intersection and union (``intersection_union``).
        target_empty: [N] the target has no pixel other than 0 (GSVA: ``gt.sum() < 1``).
        pred_has_object: [N] the answer has a [SEG] (False: the model rejected the query).
        protocol: "lisa" (LISA ``train_ds.py::validate``): term I / (U + 1e-5), 1.0 where
            U == 0; cIoU adds I and U of every sample. "gsva" (GSVA ``solver.py::eval_gres``
            on gRefCOCO): an empty target scores 1.0 when rejected and 0.0 otherwise and adds
            (0, U) to cIoU when not rejected, (0, 0) when rejected; a sample with a target
            scores I / (U + 1e-8) and adds (I, U), whether rejected or not.

    Returns:
        (score, c_inter, c_union): float64 [N] each; ``giou_from_scores(score)`` and
        ``ciou_from_counts(c_inter, c_union)`` finish the metrics.
    """
    i = np.asarray(inter, dtype=np.float64).reshape(-1)
    u = np.asarray(union, dtype=np.float64).reshape(-1)
    if i.shape != u.shape:
        raise ValueError(f"inter has {i.size} entries, union {u.size}")
    if np.any(i < 0) or np.any(i > u):
        raise ValueError("intersections must satisfy 0 <= inter <= union")
    empty = _flags(target_empty, "target_empty", i.size)
    has_obj = _flags(pred_has_object, "pred_has_object", i.size)
    if protocol == "lisa":
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(u == 0, 1.0, i / (u + GIOU_EPS))
        return score, i, u
    if protocol == "gsva":
        score = np.where(empty, np.where(has_obj, 0.0, 1.0), i / (u + GSVA_GIOU_EPS))
        c_inter = np.where(empty, 0.0, i)
        c_union = np.where(empty & ~has_obj, 0.0, u)
        return score, c_inter, c_union
    raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")


def giou_from_scores(score: Sequence[float], count_eps: float = COUNT_EPS) -> float:
    """gIoU from per-sample terms [N]: sum / (N + count_eps), LISA's ``AverageMeter.all_reduce``."""
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    if s.size == 0:
        raise ValueError("gIoU of zero samples is undefined")
    return float(s.sum() / (s.size + count_eps))


def ciou_from_counts(c_inter: Sequence[float], c_union: Sequence[float], eps: float = CIOU_EPS) -> float:
    """cIoU from per-sample contributions [N]: sum(c_inter) / (sum(c_union) + eps)."""
    i = np.asarray(c_inter, dtype=np.float64).reshape(-1)
    u = np.asarray(c_union, dtype=np.float64).reshape(-1)
    if i.size == 0 or i.shape != u.shape:
        raise ValueError(f"cIoU needs equally many intersections and unions, got {i.size} and {u.size}")
    return float(i.sum() / (u.sum() + eps))


def nt_accuracy(target_empty: Sequence[bool], pred_has_object: Sequence[bool]) -> Tuple[Optional[float], Optional[float]]:
    """GSVA's N-acc and T-acc (``solver.py::eval_gres``).

    N-acc = rejected no-target samples / no-target samples (TP / (TP + FN) of "no target"),
    T-acc = accepted has-target samples / has-target samples (TN / (TN + FP)). A sample is
    "no-target" when its target mask is empty (GSVA: ``gt.sum() < 1``), "rejected" when the
    answer has no [SEG]. Each is None when its denominator is zero.
    """
    empty = np.asarray(target_empty, dtype=bool).reshape(-1)
    has_obj = _flags(pred_has_object, "pred_has_object", empty.size)
    n_no, n_yes = int(empty.sum()), int((~empty).sum())
    n_acc = float((empty & ~has_obj).sum() / n_no) if n_no else None
    t_acc = float((~empty & has_obj).sum() / n_yes) if n_yes else None
    return n_acc, t_acc


def sesame_exists(pred_has_object: Sequence[bool], pred_empty: Sequence[bool]) -> np.ndarray:
    """SESAME's predicted "object present" flag [N]: the answer has a [SEG] and its mask is
    not empty (``model/SESAME.py::evaluate`` sets it False when ``pred_mask.sum() == 0``)."""
    has_obj = np.asarray(pred_has_object, dtype=bool).reshape(-1)
    return has_obj & ~_flags(pred_empty, "pred_empty", has_obj.size)


__all__ = [
    "COUNT_EPS",
    "GSVA_GIOU_EPS",
    "IGNORE_INDEX",
    "PROTOCOLS",
    "SegMetrics",
    "ciou",
    "count_intersection_union",
    "giou",
    "intersection_union",
    "mask_iou",
    "see_accuracy",
    "sample_scores",
    "giou_from_scores",
    "ciou_from_counts",
    "nt_accuracy",
    "sesame_exists",
]
