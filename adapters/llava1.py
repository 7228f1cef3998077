"""LLaVA-1.x conventions shared by the LISA family (LISA, GSVA, SESAME, READ).

Every family vendors LLaVA-1.x (``llava/model/llava_arch.py``): one ``-200`` placeholder per
row that the model replaces by the N_p patch features of its ``CLIPVisionTower`` (so a token
after it moves by N_p - 1), images preprocessed by CLIP's "resize shortest side, centre crop",
and SAM's prompt encoder forked to take ``text_embeds``. The defaults of ``SegPipelineSpec``
are the functions of this module; a spec for another layout overrides them.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

IMAGE_TOKEN_INDEX = -200
"""LLaVA's image placeholder id (``llava/constants.py``)."""

__all__ = [
    "IMAGE_TOKEN_INDEX",
    "computes_own_points",
    "image_sizes",
    "locate_seg_tokens",
    "rows_from_offset",
    "text_embeds_count",
    "vision_tower",
    "vision_tower_image_size",
    "vision_tower_num_patches",
]


def vision_tower(core: nn.Module) -> nn.Module:
    """The ``CLIPVisionTower`` of a LLaVA-1.x model (``core.get_model().get_vision_tower()``)."""
    inner = core.get_model() if hasattr(core, "get_model") else core.model
    tower = inner.get_vision_tower() if hasattr(inner, "get_vision_tower") else inner.vision_tower
    return tower[0] if isinstance(tower, (list, tuple)) else tower


def vision_tower_num_patches(core: nn.Module) -> int:
    """N_p of a LLaVA-1.x vision tower (``CLIPVisionTower.num_patches``)."""
    return int(vision_tower(core).num_patches)


def vision_tower_image_size(core: nn.Module) -> Optional[int]:
    """CLIP's input resolution (its centre-crop size) from a LLaVA-1.x vision tower's config."""
    size = getattr(getattr(vision_tower(core), "config", None), "image_size", None)
    return int(size) if size is not None else None


def text_embeds_count(arguments: Mapping[str, Any]) -> int:
    """Prompts in a prompt-encoder call of the LISA fork: ``text_embeds.shape[0]``."""
    text = arguments.get("text_embeds")
    if text is None:
        raise RuntimeError(
            "the prompt encoder call has no text_embeds; give the spec a prompt_count that says "
            "how many prompts such a call holds"
        )
    return int(text.shape[0])


def computes_own_points(core: nn.Module) -> bool:
    """True for READ's own class (``READForCausalLM``), which prompts SAM with its own points."""
    kind = type(core)
    return any(hasattr(kind, m) for m in ("similarity_map_to_points", "similarity_as_points"))


def image_sizes(sizes: Sequence[Any]) -> Tensor:
    """(H, W) [N, 2] int64 from N sizes or shapes whose last two entries are (H, W)."""
    return torch.tensor([[int(s[-2]), int(s[-1])] for s in sizes], dtype=torch.long).view(-1, 2)


def rows_from_offset(offset: Any, sizes: Sequence[Any]) -> Tensor:
    """Per-row (H, W) [B, 2] from per-image sizes and LISA's ``offset`` (rows of image i are
    ``offset[i]:offset[i+1]``).

    Raises:
        ValueError: ``offset`` does not have one entry more than ``sizes``, or decreases.
    """
    hw = image_sizes(sizes)
    off = torch.as_tensor(offset).detach().to("cpu", torch.long).view(-1)
    if off.numel() != hw.shape[0] + 1:
        raise ValueError(f"offset has {off.numel()} entries for {hw.shape[0]} images; expected {hw.shape[0] + 1}")
    counts = off.diff()
    if (counts < 0).any():
        raise ValueError(f"offset must be non-decreasing, got {off.tolist()}")
    return hw.repeat_interleave(counts, dim=0)


def locate_seg_tokens(
    tokens: Tensor, seg_id: int, image_id: int, num_patches: int, seg_offset: int = 1
) -> Tuple[Tensor, Tensor, Tensor]:
    """Hidden-state positions of the <SEG> features and of each row's image patches.

    A row holds one placeholder ``image_id`` (expanded by the model into N_p patches, so a
    token j after it sits at j + N_p - 1) or N_p consecutive ``image_id`` tokens (already
    expanded). The <SEG> feature of a [SEG] at token j is the hidden state of token
    j - seg_offset (the last patch when that token is the placeholder).

    Args:
        tokens (Tensor): [B, L] token ids.

    Returns:
        rows (Tensor): [M] row of each [SEG], row-major order (CPU int64).
        seg_pos (Tensor): [M] hidden-state position of each <SEG> feature.
        patch_start (Tensor): [B] hidden-state position of each row's first patch (-1: none).

    Raises:
        ValueError: a row holds another number of image tokens, or a [SEG] but no image.
    """
    tok = tokens.detach()
    is_img = tok == image_id
    count = is_img.sum(1).cpu()
    first = is_img.to(torch.int8).argmax(1).cpu()
    placeholder = count == 1
    expanded = count == num_patches
    bad = (count > 0) & ~placeholder & ~expanded
    if bad.any():
        r = int(bad.nonzero()[0])
        raise ValueError(
            f"row {r} holds {int(count[r])} image tokens ({image_id}); expected one placeholder or "
            f"N_p={num_patches} expanded tokens (one image per row)"
        )
    shift = torch.where(placeholder, torch.tensor(num_patches - 1), torch.tensor(0))
    rows, cols = (tok == seg_id).nonzero(as_tuple=True)
    rows, cols = rows.cpu(), cols.cpu()
    keep = cols >= seg_offset
    rows, cols = rows[keep], cols[keep]
    no_image = count[rows] == 0
    if no_image.any():
        r = int(rows[no_image][0])
        raise ValueError(f"row {r} has a [SEG] token but no image token ({image_id})")
    q = cols - seg_offset
    seg_pos = torch.where(q >= first[rows], q + shift[rows], q)
    patch_start = torch.where(count > 0, first, torch.tensor(-1))
    return rows, seg_pos, patch_start
