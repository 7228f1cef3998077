"""Keyword arguments of the tiny families' ``model_forward`` and ``evaluate``, as each family's
data loader builds them (LISA's ``collate_fn``, SESAME's ``sam_mask_shape_list``).

Imports torch and segment_anything (``ResizeLongestSide``).
"""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import torch
from segment_anything.utils.transforms import ResizeLongestSide
from torch import Tensor

from .llava import BOS, EOS, IGNORE_INDEX, IMAGE_TOKEN_INDEX, PAD, REJ, SEG

__all__ = ["make_batch", "make_eval_batch"]

_FAMILIES = ("lisa", "gsva", "sesame", "read")


def _check_family(family: str) -> None:
    if family not in _FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {list(_FAMILIES)}")


def _rows(spec: Sequence[Sequence[int]], gen: torch.Generator, length: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Token rows ``[BOS, 5, -200, filler..., tokens..., EOS]`` right-padded to ``length``."""
    ids, labels, mask = [], [], []
    for toks in spec:
        fill = torch.randint(3, 50, (3,), generator=gen).tolist()
        row = [BOS, 5, IMAGE_TOKEN_INDEX] + fill + list(toks) + [EOS]
        lab = [IGNORE_INDEX] * (3 + len(fill)) + list(toks) + [EOS]
        pad = length - len(row)
        ids.append(row + [PAD] * pad)
        labels.append(lab + [IGNORE_INDEX] * pad)
        mask.append([1] * len(row) + [0] * pad)
    return torch.tensor(ids), torch.tensor(labels), torch.tensor(mask, dtype=torch.bool)


def make_batch(
    family: str,
    images: Sequence[Tuple[int, int]],
    rows: Sequence[Sequence[Sequence[int]]],
    seed: int = 0,
    sam_size: int = 64,
    clip_size: int = 32,
    inference: bool = False,
) -> Dict[str, Any]:
    """Keyword arguments of ``model_forward`` for images of original sizes ``images`` (H, W),
    image i having the conversations ``rows[i]`` (each a list of answer token ids, e.g.
    ``[7, SEG, 8, SEG]``). Ground-truth masks: one per [SEG] (GSVA: per [SEG] and [REJ])."""
    _check_family(family)
    if len(images) != len(rows):
        raise ValueError(f"{len(images)} image sizes for {len(rows)} images' conversations")
    gen = torch.Generator().manual_seed(seed)
    flat = [r for conv in rows for r in conv]
    length = max(len(r) for r in flat) + 8
    input_ids, labels, attn = _rows(flat, gen, length)
    offset = torch.tensor([0] + [len(c) for c in rows]).cumsum(0)
    resize = ResizeLongestSide(sam_size)
    n_img = len(images)
    masks_list, label_list, resize_list, shapes = [], [], [], []
    for (h, w), conv in zip(images, rows):
        n = sum(sum(1 for t in r if t == SEG or (family == "gsva" and t == REJ)) for r in conv)
        masks_list.append((torch.rand(n, h, w, generator=gen) > 0.5).float())
        label_list.append(torch.zeros(h, w))
        rh, rw = resize.get_preprocess_shape(h, w, sam_size)
        resize_list.append((rh, rw))
        shapes.append(((rh, rw), (h, w)))
    batch: Dict[str, Any] = {
        "images": torch.randn(n_img, 3, sam_size, sam_size, generator=gen),
        "images_clip": torch.randn(n_img, 3, clip_size, clip_size, generator=gen),
        "input_ids": input_ids,
        "labels": labels,
        "attention_masks": attn,
        "offset": offset,
        "masks_list": masks_list,
        "inference": inference,
    }
    if family in ("sesame", "read"):
        batch["sam_mask_shape_list"] = shapes
    else:
        batch["label_list"] = label_list
        batch["resize_list"] = resize_list
    return batch


def make_eval_batch(
    family: str,
    images: Sequence[Tuple[int, int]],
    prompts: Sequence[Sequence[int]],
    seed: int = 0,
    sam_size: int = 64,
    clip_size: int = 32,
    max_new_tokens: int = 3,
) -> Dict[str, Any]:
    """Keyword arguments of ``evaluate``: one prompt (and image) per row; ``prompts[i]`` are
    tokens after the image (they may hold [SEG] of an earlier turn). Equal-length rows."""
    _check_family(family)
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} image sizes for {len(prompts)} prompts")
    gen = torch.Generator().manual_seed(seed)
    length = max(len(p) for p in prompts)
    ids = []
    for p in prompts:
        fill = torch.randint(3, 50, (3 + length - len(p),), generator=gen).tolist()
        ids.append([BOS, 5, IMAGE_TOKEN_INDEX] + fill + list(p))
    resize = ResizeLongestSide(sam_size)
    resized = [resize.get_preprocess_shape(h, w, sam_size) for h, w in images]
    batch: Dict[str, Any] = {
        "images_clip": torch.randn(len(images), 3, clip_size, clip_size, generator=gen),
        "images": torch.randn(len(images), 3, sam_size, sam_size, generator=gen),
        "input_ids": torch.tensor(ids),
        "max_new_tokens": max_new_tokens,
    }
    if family in ("sesame", "read"):
        batch["sam_mask_shape_list"] = [((rh, rw), (h, w)) for (rh, rw), (h, w) in zip(resized, images)]
    else:
        batch["resize_list"] = resized
        batch["original_size_list"] = [(h, w) for h, w in images]
    return batch
