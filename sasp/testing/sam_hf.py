"""transformers' SAM and SAM 2 at test size, and a LISA-family model built on transformers' SAM.

- ``tiny_sam_config`` / ``tiny_sam2_config``: ``sam_config`` dicts of SegLlava's
  "transformers" and "sam2" backends (``sasp.models.seg_llava.sam_backends``): a 64 px input,
  a 4 x 4 image embedding, prompt width 16, 16 mask-input channels (fewer than 8 leave one
  channel after the mask embedding's first convolution, whose LayerNorm then makes the dense
  prompt constant: no gradient reaches the mask prompt).
- ``TextSamPromptEncoder``: transformers' ``SamPromptEncoder`` with a ``text_embeds`` argument
  whose tokens follow the point and box tokens, as the LISA family forks segment_anything's
  encoder (``sasp.testing.sam.TextPromptEncoder``), in transformers' layout: prompts
  [B, point_batch, tokens, C].
- ``TinyLISASam``: ``TinyLISA`` whose SAM is transformers' ``SamModel`` with that encoder; it
  decodes the n [SEG] of an image as a batch of n (``input_points`` [n, 1, K, 2] and
  ``input_masks`` [n, 1, m, m] per [SEG]). ``build_tiny_lisa_sam`` builds it; it takes
  ``make_batch("lisa", ...)``'s arguments. An adapter spec reaches it with
  ``LISA_SPEC.replace(sam_backend="transformers")``.

Imports transformers (``SamModel``, ``Sam2Config``) and segment_anything (via ``families``).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import SamConfig, SamModel
from transformers.models.sam.modeling_sam import SamPromptEncoder

from .families import TinyLISA, _build_tiny

__all__ = ["TextSamPromptEncoder", "TinyLISASam", "build_tiny_lisa_sam", "tiny_hf_sam", "tiny_sam2_config", "tiny_sam_config"]


def _decoder(prompt_dim: int) -> Dict[str, Any]:
    return dict(hidden_size=prompt_dim, mlp_dim=2 * prompt_dim, num_hidden_layers=1, num_attention_heads=2, iou_head_hidden_dim=prompt_dim)


def tiny_sam_config(size: int = 64, prompt_dim: int = 16) -> Dict[str, Any]:
    """SegLlava's ``sam_config`` of a tiny transformers ``SamModel`` (2 vision layers, 32 wide)."""
    return {
        "backend": "transformers",
        "config": {
            "vision_config": dict(hidden_size=32, output_channels=prompt_dim, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=size, patch_size=16, window_size=0, global_attn_indexes=[1],
                                  num_pos_feats=prompt_dim // 2, mlp_dim=64),
            "prompt_encoder_config": dict(hidden_size=prompt_dim, image_size=size, patch_size=16, mask_input_channels=16),
            "mask_decoder_config": _decoder(prompt_dim),
        },
    }


def tiny_sam2_config(size: int = 64, prompt_dim: int = 16) -> Dict[str, Any]:
    """SegLlava's ``sam_config`` of a tiny transformers ``Sam2Model`` (a 4-stage Hiera, one
    block per stage; ``size`` a multiple of 64)."""
    backbone = dict(
        model_type="sam2_hiera_det_model", hidden_size=8, num_attention_heads=1, image_size=[size, size],
        blocks_per_stage=[1, 1, 1, 1], embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 1, 1],
        window_size_per_stage=[4, 4, 4, 2], global_attention_blocks=[0], window_positional_embedding_background_size=[4, 4],
    )
    levels = [[size // 4] * 2, [size // 8] * 2, [size // 16] * 2]
    return {
        "backend": "sam2",
        "config": {
            "vision_config": dict(backbone_config=backbone, backbone_channel_list=[64, 32, 16, 8],
                                  backbone_feature_sizes=levels, fpn_hidden_size=prompt_dim),
            "prompt_encoder_config": dict(hidden_size=prompt_dim, image_size=size, patch_size=16, mask_input_channels=16),
            "mask_decoder_config": _decoder(prompt_dim),
        },
    }


class TextSamPromptEncoder(SamPromptEncoder):
    """transformers' ``SamPromptEncoder`` plus ``text_embeds`` [B, 1, 1, C]: its tokens follow
    the point and box tokens (the LISA fork's text prompt, in transformers' layout)."""

    @property
    def embed_dim(self) -> int:
        return self.hidden_size

    def forward(  # type: ignore[override]
        self,
        input_points: Optional[Tensor],
        input_labels: Optional[Tensor],
        input_boxes: Optional[Tensor],
        input_masks: Optional[Tensor],
        text_embeds: Optional[Tensor] = None,
    ) -> Tuple[Optional[Tensor], Tensor]:
        """Sparse [B, 1, n_points (+1 pad) + 2 n_boxes + n_text, C] (None: no prompt at all)
        and dense [B, C, h, w] embeddings."""
        sparse, dense = super().forward(input_points, input_labels, input_boxes, input_masks)
        if text_embeds is None:
            return sparse, dense
        if dense.shape[0] != text_embeds.shape[0]:  # no points, boxes or masks: batch 1
            dense = dense.expand(text_embeds.shape[0], -1, -1, -1)
        text = text_embeds if sparse is None else text_embeds.to(sparse.dtype)
        return (text if sparse is None else torch.cat([sparse, text], 2)), dense


def tiny_hf_sam(size: int = 64, prompt_dim: int = 16) -> SamModel:
    """A tiny transformers ``SamModel`` whose prompt encoder is ``TextSamPromptEncoder``."""
    sam = SamModel(SamConfig(**tiny_sam_config(size, prompt_dim)["config"]))
    state = sam.prompt_encoder.state_dict()
    sam.prompt_encoder = TextSamPromptEncoder(sam.config)
    sam.prompt_encoder.load_state_dict(state)
    sam.prompt_encoder.shared_embedding = sam.shared_image_embedding  # tied, as SamModel ties them
    return sam


class TinyLISASam(TinyLISA):
    """``TinyLISA`` on transformers' SAM: the same ``model_forward`` / ``evaluate``, with SAM's
    image embeddings, prompt call and mask post-processing in transformers' conventions."""

    def get_visual_embs(self, pixel_values: Tensor) -> Tensor:
        with torch.no_grad():
            return self.model.visual_model.vision_encoder(pixel_values).last_hidden_state

    def _decode(self, embeds: Tensor, image_embedding: Tensor, input_size: Any, original_size: Any, points=None) -> Tensor:
        sam, n = self.model.visual_model, embeds.shape[0]
        h, w = (int(v) for v in original_size)
        if n == 0:
            return embeds.new_zeros(0, h, w)
        sparse, dense = sam.prompt_encoder(
            input_points=None, input_labels=None, input_boxes=None, input_masks=None, text_embeds=embeds[:, None, None]
        )
        low_res = sam.mask_decoder(
            image_embeddings=image_embedding[None].expand(n, -1, -1, -1),
            image_positional_embeddings=sam.get_image_wide_positional_embeddings().expand(n, -1, -1, -1),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense.expand(n, -1, -1, -1),
            multimask_output=False,
        )[0][:, 0]
        size = int(sam.prompt_encoder.input_image_size)  # SamImageProcessor.post_process_masks
        masks = F.interpolate(low_res, (size, size), mode="bilinear", align_corners=False)
        masks = masks[..., : int(input_size[0]), : int(input_size[1])]
        return F.interpolate(masks, (h, w), mode="bilinear", align_corners=False)[:, 0]


def build_tiny_lisa_sam(seed: int = 0, hidden: int = 32, layers: int = 2, clip_image: int = 32, clip_patch: int = 4) -> nn.Module:
    """A tiny random ``TinyLISASam`` in eval mode (the sizes of ``sasp.testing.build_tiny``:
    N_p = 64 CLIP patches, a 64 px SAM with prompt width 16)."""
    torch.manual_seed(seed)
    return _build_tiny(TinyLISASam, tiny_hf_sam(), hidden, layers, clip_image, clip_patch)
