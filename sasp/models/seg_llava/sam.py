"""segment_anything's SAM for the model: building (released variants or small custom sizes),
loading released checkpoints, and constructor-like initialisation.

Imports segment_anything (and torch) only, so that test doubles can build the same tiny SAM.
"""
from __future__ import annotations

import os
from functools import partial
from typing import Any, Dict, Mapping, Optional, Type, Union

import torch
from torch import nn

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
RELEASED_WIDTHS = {1280: "vit_h", 1024: "vit_l", 768: "vit_b"}

TINY_SAM_CONFIG: Dict[str, Any] = {
    "variant": "custom",
    "encoder_embed_dim": 32,
    "encoder_depth": 2,
    "encoder_num_heads": 2,
    "encoder_global_attn_indexes": [1],
    "image_size": 256,
    "prompt_embed_dim": 32,
    "decoder_mlp_dim": 64,
    "decoder_num_heads": 2,
    "iou_head_hidden_dim": 32,
}
"""A 256 px SAM with a 32-wide, 2-layer encoder: the stock classes at test size."""


class CheckpointError(ValueError):
    """A checkpoint of the wrong family, shape or format (the message names the file)."""


def build_sam(sam_config: Optional[Mapping[str, Any]] = None, prompt_encoder_class: Optional[Type[nn.Module]] = None) -> nn.Module:
    """segment_anything's ``Sam`` from a config dict, random weights.

    ``{"variant": "vit_h" | "vit_l" | "vit_b"}`` calls ``sam_model_registry[variant]``;
    ``{"variant": "custom", ...}`` builds the same classes with other sizes. Keys (defaults are
    ViT-B's decoder): encoder_embed_dim, encoder_depth, encoder_num_heads,
    encoder_global_attn_indexes, encoder_mlp_ratio (4), use_rel_pos (True), window_size (14),
    prompt_embed_dim (256), image_size (1024), vit_patch_size (16), mask_in_chans (16),
    decoder_depth (2), decoder_mlp_dim (2048), decoder_num_heads (8), iou_head_hidden_dim
    (256), pixel_mean / pixel_std (SAM's). ``prompt_encoder_class`` replaces the stock
    ``PromptEncoder`` (a fork with the same constructor, e.g. one that takes text embeddings).
    """
    from segment_anything import sam_model_registry
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    c = dict(sam_config or {"variant": "vit_h"})
    variant = c.get("variant", "vit_h")
    if variant in sam_model_registry and variant != "default":
        if prompt_encoder_class is not None:
            raise ValueError("prompt_encoder_class needs a 'custom' SAM config")
        return sam_model_registry[variant](checkpoint=None)
    if variant != "custom":
        raise ValueError(f"unknown SAM variant {variant!r}; expected vit_h, vit_l, vit_b or custom")
    dim = int(c.get("prompt_embed_dim", 256))
    size = int(c.get("image_size", 1024))
    patch = int(c.get("vit_patch_size", 16))
    encoder = ImageEncoderViT(
        depth=int(c["encoder_depth"]),
        embed_dim=int(c["encoder_embed_dim"]),
        img_size=size,
        mlp_ratio=float(c.get("encoder_mlp_ratio", 4)),
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        num_heads=int(c["encoder_num_heads"]),
        patch_size=patch,
        qkv_bias=True,
        use_rel_pos=bool(c.get("use_rel_pos", True)),
        global_attn_indexes=tuple(c.get("encoder_global_attn_indexes", ())),
        window_size=int(c.get("window_size", 14)),
        out_chans=dim,
    )
    prompt = (prompt_encoder_class or PromptEncoder)(
        embed_dim=dim,
        image_embedding_size=(size // patch, size // patch),
        input_image_size=(size, size),
        mask_in_chans=int(c.get("mask_in_chans", 16)),
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(
            depth=int(c.get("decoder_depth", 2)),
            embedding_dim=dim,
            mlp_dim=int(c.get("decoder_mlp_dim", 2048)),
            num_heads=int(c.get("decoder_num_heads", 8)),
        ),
        transformer_dim=dim,
        iou_head_depth=3,
        iou_head_hidden_dim=int(c.get("iou_head_hidden_dim", 256)),
    )
    mean = list(c.get("pixel_mean", SAM_PIXEL_MEAN))
    std = list(c.get("pixel_std", SAM_PIXEL_STD))
    return Sam(image_encoder=encoder, prompt_encoder=prompt, mask_decoder=decoder, pixel_mean=mean, pixel_std=std)


def _read_state(path: str) -> Mapping[str, torch.Tensor]:
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a state dict"
        raise CheckpointError(f"{path} is not a readable state dict ({type(err).__name__}: {err})") from None


def sam_state_dict(path: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    """A segment_anything checkpoint's state dict (``sam_vit_h_4b8939.pth`` ...), keys without a
    ``visual_model.`` prefix."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"SAM checkpoint not found: {path}")
    state = _read_state(path)
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{path} does not hold a state dict")
    if all(k.startswith("visual_model.") for k in state):
        state = {k[len("visual_model."):]: v for k, v in state.items()}
    return dict(state)


def sam_variant_of(path: Union[str, os.PathLike]) -> str:
    """"vit_h", "vit_l" or "vit_b" from a released SAM checkpoint's image-encoder width."""
    state = sam_state_dict(path)
    weight = state.get("image_encoder.patch_embed.proj.weight")
    if weight is None or int(weight.shape[0]) not in RELEASED_WIDTHS:
        raise CheckpointError(f"{os.fspath(path)} is not a released SAM checkpoint (vit_h, vit_l or vit_b)")
    return RELEASED_WIDTHS[int(weight.shape[0])]


def load_sam_weights(sam: nn.Module, path: Union[str, os.PathLike]) -> None:
    """Load a segment_anything checkpoint into ``sam``; any missing, unexpected or mis-shaped
    key raises ``CheckpointError`` naming it."""
    state = sam_state_dict(path)
    own = sam.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{os.fspath(path)} does not fit this SAM: {len(missing)} missing keys (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}), {len(wrong)} of another shape (e.g. {wrong[:2]})"
        )
    sam.load_state_dict(state)


def init_like_constructor(module: nn.Module) -> None:
    """Re-create the initial values segment_anything's constructors give ``module`` (PyTorch's
    layer defaults, zero position embeddings, SAM's pixel statistics). Under transformers >= 5
    its guarded initialisers leave parameters that a checkpoint already filled alone."""
    from segment_anything.modeling import ImageEncoderViT, Sam
    from segment_anything.modeling.common import LayerNorm2d
    from segment_anything.modeling.image_encoder import Attention
    from segment_anything.modeling.prompt_encoder import PositionEmbeddingRandom

    try:
        from transformers import initialization as init
    except ImportError:  # transformers 4.x: missing keys are the only ones initialised anyway
        init = None

    def fill(t: torch.Tensor, value: Any) -> None:
        if init is not None:
            init.copy_(t, torch.as_tensor(value, dtype=t.dtype).expand_as(t))
        else:
            with torch.no_grad():
                t.copy_(torch.as_tensor(value, dtype=t.dtype).expand_as(t))

    if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Embedding, nn.LayerNorm)):
        module.reset_parameters()
    elif isinstance(module, LayerNorm2d):
        fill(module.weight, 1.0)
        fill(module.bias, 0.0)
    elif isinstance(module, ImageEncoderViT) and module.pos_embed is not None:
        fill(module.pos_embed, 0.0)
    elif isinstance(module, Attention) and getattr(module, "use_rel_pos", False):
        fill(module.rel_pos_h, 0.0)
        fill(module.rel_pos_w, 0.0)
    elif isinstance(module, PositionEmbeddingRandom):
        if init is not None:
            init.normal_(module.positional_encoding_gaussian_matrix)
        else:
            with torch.no_grad():
                module.positional_encoding_gaussian_matrix.normal_()
    elif isinstance(module, Sam):  # non-persistent buffers: never in a checkpoint
        fill(module.pixel_mean, torch.tensor(SAM_PIXEL_MEAN).view(-1, 1, 1))
        fill(module.pixel_std, torch.tensor(SAM_PIXEL_STD).view(-1, 1, 1))
