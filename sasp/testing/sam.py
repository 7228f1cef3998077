"""SAM as the LISA family forks it, at test size.

The LISA fork of segment_anything (dvlab-research/LISA ``model/segment_anything/modeling/
prompt_encoder.py``, vendored unchanged by GSVA, SESAME and READ) gives the prompt encoder a
``text_embeds`` argument whose tokens follow the point and box tokens, and casts point
coordinates to the position encoding's dtype. ``tiny_sam`` builds segment_anything's own
classes through ``sasp.models.seg_llava.sam.build_sam`` with that prompt encoder.

Imports torch and segment_anything.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import torch
from segment_anything.modeling import PromptEncoder, Sam
from segment_anything.modeling.prompt_encoder import PositionEmbeddingRandom
from torch import Tensor

from sasp.models.seg_llava.sam import build_sam

__all__ = ["ForkPositionEmbedding", "TextPromptEncoder", "tiny_sam", "tiny_sam_config"]


class ForkPositionEmbedding(PositionEmbeddingRandom):
    """The LISA fork's random-Fourier position encoding: coordinates are cast to the
    encoding's dtype, so a bf16 SAM takes float32 points."""

    def _pe_encoding(self, coords: Tensor) -> Tensor:
        coords = 2 * coords - 1
        coords = coords.to(self.positional_encoding_gaussian_matrix.dtype) @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)


class TextPromptEncoder(PromptEncoder):
    """SAM's prompt encoder as the LISA family forks it: a required ``text_embeds`` argument
    [B, 1, C] whose tokens follow the point and box tokens."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pe_layer = ForkPositionEmbedding(self.embed_dim // 2)

    def _get_batch_size(self, points, boxes, masks, text_embeds=None) -> int:  # type: ignore[override]
        if points is not None:
            return points[0].shape[0]
        if boxes is not None:
            return boxes.shape[0]
        if masks is not None:
            return masks.shape[0]
        if text_embeds is not None:
            return text_embeds.shape[0]
        return 1

    def forward(  # type: ignore[override]
        self,
        points: Optional[Tuple[Tensor, Tensor]],
        boxes: Optional[Tensor],
        masks: Optional[Tensor],
        text_embeds: Optional[Tensor],
    ) -> Tuple[Tensor, Tensor]:
        """Sparse [B, n_points (+1 pad) + 2 n_boxes + n_text, C] and dense [B, C, h, w]
        prompt embeddings; points are (coords [B, N, 2] in the input frame, labels [B, N])."""
        bs = self._get_batch_size(points, boxes, masks, text_embeds)
        sparse = torch.empty((bs, 0, self.embed_dim), device=self._get_device())
        if points is not None:
            coords, labels = points
            sparse = torch.cat([sparse, self._embed_points(coords, labels, pad=(boxes is None))], dim=1)
        if boxes is not None:
            sparse = torch.cat([sparse, self._embed_boxes(boxes)], dim=1)
        if text_embeds is not None:
            sparse = torch.cat([sparse, text_embeds], dim=1)
        if masks is not None:
            dense = self._embed_masks(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
                bs, -1, self.image_embedding_size[0], self.image_embedding_size[1]
            )
        return sparse, dense


def tiny_sam_config(
    img_size: int = 64,
    patch: int = 16,
    encoder_dim: int = 32,
    prompt_dim: int = 16,
    decoder_depth: int = 1,
    mlp_dim: int = 32,
    heads: int = 2,
    encoder_depth: int = 1,
) -> Dict[str, Any]:
    """The ``build_sam`` config of a small SAM: global attention without relative position
    terms, zero mean / unit std pixels (ViT-B's decoder is ``prompt_dim=256,
    decoder_depth=2, mlp_dim=2048, heads=8, img_size=1024, patch=16``)."""
    return {
        "variant": "custom",
        "encoder_embed_dim": encoder_dim,
        "encoder_depth": encoder_depth,
        "encoder_num_heads": heads,
        "encoder_global_attn_indexes": [],
        "encoder_mlp_ratio": 2,
        "use_rel_pos": False,
        "window_size": 0,
        "image_size": img_size,
        "vit_patch_size": patch,
        "prompt_embed_dim": prompt_dim,
        "mask_in_chans": 4,
        "decoder_depth": decoder_depth,
        "decoder_mlp_dim": mlp_dim,
        "decoder_num_heads": heads,
        "iou_head_hidden_dim": prompt_dim,
        "pixel_mean": [0.0] * 3,
        "pixel_std": [1.0] * 3,
    }


def tiny_sam(
    img_size: int = 64,
    patch: int = 16,
    encoder_dim: int = 32,
    prompt_dim: int = 16,
    text_prompts: bool = True,
    decoder_depth: int = 1,
    mlp_dim: int = 32,
    heads: int = 2,
    encoder_depth: int = 1,
) -> Sam:
    """A SAM of segment_anything's classes with small dimensions and random weights (64 px
    input, 4 x 4 image embedding, prompt dim 16 by default), whose prompt encoder is the LISA
    fork's ``TextPromptEncoder`` (the stock one with ``text_prompts=False``)."""
    config = tiny_sam_config(img_size, patch, encoder_dim, prompt_dim, decoder_depth, mlp_dim, heads, encoder_depth)
    return build_sam(config, prompt_encoder_class=TextPromptEncoder if text_prompts else None)
