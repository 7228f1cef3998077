"""LISA's mask losses (dvlab-research/LISA ``model/LISA.py``: ``dice_loss``, ``sigmoid_ce_loss``).

The training loss is ``ce_loss_weight * CE + bce_loss_weight * BCE + dice_loss_weight * Dice``
with LISA's weights 1.0 / 2.0 / 0.5; BCE and Dice are averaged over the masks of the batch.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def dice_loss(inputs: Tensor, targets: Tensor, num_masks: float, scale: float = 1000, eps: float = 1e-6) -> Tensor:
    """LISA's Dice loss on logits [N, H, W]: sum over masks of 1 - Dice, divided by num_masks."""
    inputs = inputs.sigmoid().flatten(1)
    targets = targets.flatten(1)
    numerator = 2 * (inputs / scale * targets).sum(-1)
    denominator = (inputs / scale).sum(-1) + (targets / scale).sum(-1)
    loss = 1 - (numerator + eps) / (denominator + eps)
    return loss.sum() / (num_masks + 1e-8)


def sigmoid_ce_loss(inputs: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """LISA's per-pixel BCE on logits [N, H, W]: mean over pixels, sum over masks / num_masks."""
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    return loss.flatten(1).mean(1).sum() / (num_masks + 1e-8)


def mask_losses(pred_masks: Sequence[Tensor], gt_masks: Sequence[Tensor]) -> Tuple[Tensor, Tensor, int]:
    """BCE and Dice averaged over every mask of the batch, as LISA's ``model_forward`` does.

    Args:
        pred_masks: per row, mask logits [n_i, H_i, W_i].
        gt_masks: per row, targets [n_i, H_i, W_i] (0/1).

    Returns:
        (bce, dice, number of masks); both losses are 0 (with a graph) when there is no mask.

    Raises:
        ValueError: a row's prediction and target differ in count or size.
    """
    if len(pred_masks) != len(gt_masks):
        raise ValueError(f"{len(pred_masks)} rows of predicted masks for {len(gt_masks)} rows of targets")
    bce = dice = None
    num = 0
    for b, (pred, gt) in enumerate(zip(pred_masks, gt_masks)):
        if gt.shape[0] != pred.shape[0] or gt.shape[-2:] != pred.shape[-2:]:
            raise ValueError(f"row {b}: {pred.shape[0]} [SEG] tokens predict masks {tuple(pred.shape)}, target is {tuple(gt.shape)}")
        if pred.shape[0] == 0:
            continue
        n = gt.shape[0]
        gt = gt.to(pred.device, torch.float32)
        row_bce = sigmoid_ce_loss(pred.float(), gt, n) * n
        row_dice = dice_loss(pred.float(), gt, n) * n
        bce = row_bce if bce is None else bce + row_bce
        dice = row_dice if dice is None else dice + row_dice
        num += n
    if bce is None:
        zero = sum(p.float().sum() for p in pred_masks) * 0.0 if len(pred_masks) else torch.zeros(())
        return zero, zero, 0
    return bce / (num + 1e-8), dice / (num + 1e-8), num
