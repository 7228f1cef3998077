"""Referring / reasoning segmentation metrics: gIoU, cIoU and false-premise "see" accuracy.

The definitions are those of LISA's ``validate`` (train_ds.py) and SESAME's ``run_eval``
(eval_sesame.py), both built on ``intersectionAndUnionGPU(pred, target, 2, ignore_index=255)``:

- Per mask: pixels where the target equals ``ignore_index`` count in neither the intersection
  nor the union. I = |pred AND target|, U = |pred OR target| over the remaining pixels.
- gIoU: the mean over all masks of I / (U + 1e-5), where a mask with U = 0 (an empty
  prediction on an empty target) scores 1.0 (LISA: ``acc_iou[union_i == 0] += 1.0``).
- cIoU: (sum of I over the dataset) / (sum of U over the dataset + 1e-10).
- see accuracy (SESAME): the fraction of queries whose predicted "object present" flag
  equals the ground truth's (``gt_exists == pred_exists``).

The epsilons are LISA's, so numbers agree with its logs to float precision; pass ``eps=0``
for the exact ratios. Predictions must already be binary: LISA thresholds logits at 0
(``pred_masks > 0``), other pipelines threshold sigmoid outputs at 0.5, so this module does
not guess.

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
CIOU_EPS = 1e-10


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


def mask_iou(inter: ArrayLike, union: ArrayLike, eps: float = GIOU_EPS) -> Tensor:
    """Per-mask IoU as LISA scores it: I / (U + eps), and 1.0 where U == 0. float64 [N]."""
    i = torch.as_tensor(inter, dtype=torch.float64)
    u = torch.as_tensor(union, dtype=torch.float64)
    return torch.where(u == 0, torch.ones_like(u), i / (u + eps))


def giou(pred: ArrayLike, target: ArrayLike, ignore_index: Optional[int] = IGNORE_INDEX, eps: float = GIOU_EPS) -> float:
    """gIoU of one batch of masks [N, H, W]: the mean of the per-mask IoUs."""
    inter, union = intersection_union(pred, target, ignore_index)
    if inter.numel() == 0:
        raise ValueError("gIoU of zero masks is undefined")
    return float(mask_iou(inter, union, eps).mean())


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

    def __init__(self, ignore_index: Optional[int] = IGNORE_INDEX, giou_eps: float = GIOU_EPS, ciou_eps: float = CIOU_EPS):
        self.ignore_index = ignore_index
        self.giou_eps = giou_eps
        self.ciou_eps = ciou_eps
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
            "giou": self._iou_sum / self._num_masks if self._num_masks else None,
            "ciou": self._inter / (self._union + self.ciou_eps) if self._num_masks else None,
            "see_acc": self._see_correct / self._num_queries if self._num_queries else None,
            "num_masks": self._num_masks,
            "num_queries": self._num_queries,
        }


__all__ = [
    "IGNORE_INDEX",
    "SegMetrics",
    "ciou",
    "giou",
    "intersection_union",
    "mask_iou",
    "see_accuracy",
]
