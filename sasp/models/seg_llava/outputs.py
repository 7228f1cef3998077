"""What ``SegLlavaForCausalLM`` returns: the prompts SAM received, the training forward's
losses and ``segment``'s output (transformers ``ModelOutput`` dataclasses)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from torch import Tensor
from transformers.utils import ModelOutput


@dataclass
class SegPrompts(ModelOutput):
    """What SAM was prompted with, per [SEG] in row-major order (M = number of [SEG]).

    Attributes:
        seg_rows: [M] the batch row of each [SEG].
        similarity: [M, N_p] float32 similarity of each <SEG> feature with its image's patches.
        points: [M, K, 2] refined SasP points (x, y) in image pixels, or None when SAM got none.
        labels: [M, K] point labels (1 positive, 0 negative, -1 padding), or None.
        mask_prompts: [M, 1, m, m] the similarity maps SAM got as its dense mask prompt, or None.
    """

    seg_rows: Optional[Tensor] = None
    similarity: Optional[Tensor] = None
    points: Optional[Tensor] = None
    labels: Optional[Tensor] = None
    mask_prompts: Optional[Tensor] = None


@dataclass
class SegLlavaOutput(SegPrompts):
    """Training forward output: LISA's losses, the logits and the mask logits per row."""

    loss: Optional[Tensor] = None
    ce_loss: Optional[Tensor] = None
    mask_bce_loss: Optional[Tensor] = None
    mask_dice_loss: Optional[Tensor] = None
    mask_loss: Optional[Tensor] = None
    logits: Optional[Tensor] = None
    pred_masks: Optional[List[Tensor]] = None


@dataclass
class SegLlavaGeneration(SegPrompts):
    """``segment`` output.

    Attributes:
        sequences: [B, T] prompt + generated tokens.
        masks: per row, [n_SEG, H, W] bool masks at the original image size ([0, H, W] for a
            row without [SEG]).
        mask_logits: the same as logits (float).
        seg_counts: [B] number of [SEG] tokens per row.
        has_object: [B] False for rows whose answer has no [SEG] ("no object").
        hidden_states: [B, T, D] last-layer hidden states aligned with ``sequences`` (only
            with ``output_hidden_states=True``).
    """

    sequences: Optional[Tensor] = None
    masks: Optional[List[Tensor]] = None
    mask_logits: Optional[List[Tensor]] = None
    seg_counts: Optional[Tensor] = None
    has_object: Optional[Tensor] = None
    hidden_states: Optional[Tensor] = None
