"""An HF-native <SEG> model: transformers' LLaVA + segment_anything's SAM, LISA's architecture.

LISA pins transformers 4.31 and ships forks of LLaVA and SAM. ``SegLlavaForCausalLM`` is the
same architecture on current libraries, without forks:

- the multimodal LLM is transformers' ``LlavaForConditionalGeneration`` (this class subclasses
  it, so every LLaVA-1.5-style checkpoint loads: ``SegLlavaForCausalLM.from_llava(path)``);
- a ``[SEG]`` token is added to the tokenizer and the embeddings;
- LISA's projection ``text_hidden_fcs[0]`` (Linear, ReLU, Linear, Dropout) maps the last-layer
  hidden state one position before each [SEG] to SAM's prompt width;
- ``visual_model`` is segment_anything's stock ``Sam`` (``sam_model_registry``; a SAM
  checkpoint loads with ``load_sam_checkpoint``). Stock SAM's prompt encoder has no
  ``text_embeds`` argument, so the model calls it once per [SEG] (no points, boxes or masks:
  one prompt per call) and appends the projected [SEG] embedding after its sparse prompt, as
  LISA's fork does after the points;
- LISA's losses: ``ce_loss_weight * CE + bce_loss_weight * BCE + dice_loss_weight * Dice``.

Token layout (how SasP finds the patches): transformers' ``LlavaProcessor`` expands the
``<image>`` placeholder into N_p copies of ``config.image_token_id`` in ``input_ids`` (N_p =
(image_size / patch_size)^2, the CLS token dropped by the "default" feature strategy), so the
patch hidden states sit exactly where ``input_ids == config.image_token_id``. Geometry: the
CLIP image processor resizes the shortest side and centre-crops ("center_crop", the default
``config.image_geometry``); a processor that pads to a square instead (``LlavaImageProcessor``
with ``do_pad=True``) is "pad_square".

    >>> from sasp.adapters.hf import build_tiny, wrap_hf
    >>> model, processor = build_tiny()                     # tiny random weights, offline
    >>> batch = processor(images=[img], prompts=["Segment the red circle."])
    >>> out = model.segment(**batch, max_new_tokens=16)     # generate, then masks
    >>> out.masks[0].shape, out.has_object                  # [n_SEG, H, W] bool, [B] bool
    >>> wrap_hf(model)                                      # SAM now also gets SasP points
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import Tensor, nn
from transformers import (
    BatchFeature,
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)
from transformers.utils import ModelOutput

from sasp.config import SasPConfig

__all__ = [
    "CheckpointError",
    "HF_SPEC_NAME",
    "InputError",
    "SEG_TOKEN",
    "SegLlavaConfig",
    "SegLlavaForCausalLM",
    "SegLlavaGeneration",
    "SegLlavaOutput",
    "SegLlavaProcessor",
    "build_sam",
    "build_tiny",
    "build_tiny_tokenizer",
    "dice_loss",
    "hf_spec",
    "load_model",
    "load_sam_checkpoint",
    "sam_variant_of",
    "seg_similarity",
    "sigmoid_ce_loss",
    "wrap_hf",
]

SEG_TOKEN = "[SEG]"
IMAGE_TOKEN = "<image>"
PROMPT_TEMPLATE = "USER: <image>\n{prompt} ASSISTANT:"
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
HF_SPEC_NAME = "hf"

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


class InputError(ValueError):
    """A user input the model cannot take (empty prompt, too long, unreadable image ...)."""


class CheckpointError(ValueError):
    """A checkpoint of the wrong family or shape."""


# --------------------------------------------------------------------------- SAM


def build_sam(sam_config: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """segment_anything's stock ``Sam`` from a config dict (random weights).

    ``{"variant": "vit_h" | "vit_l" | "vit_b"}`` calls ``sam_model_registry[variant]``;
    ``{"variant": "custom", ...}`` builds the same classes with other sizes (keys:
    encoder_embed_dim, encoder_depth, encoder_num_heads, encoder_global_attn_indexes,
    prompt_embed_dim, image_size, vit_patch_size, window_size, decoder_depth,
    decoder_mlp_dim, decoder_num_heads, iou_head_hidden_dim) for tests and demos.
    """
    from functools import partial

    from segment_anything import sam_model_registry
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    c = dict(sam_config or {"variant": "vit_h"})
    variant = c.get("variant", "vit_h")
    if variant in sam_model_registry:
        return sam_model_registry[variant](checkpoint=None)
    if variant != "custom":
        raise ValueError(f"unknown SAM variant {variant!r}; expected one of {sorted(sam_model_registry)} or 'custom'")
    dim = int(c.get("prompt_embed_dim", 256))
    image_size = int(c.get("image_size", 1024))
    patch = int(c.get("vit_patch_size", 16))
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=int(c["encoder_depth"]),
            embed_dim=int(c["encoder_embed_dim"]),
            img_size=image_size,
            mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_heads=int(c["encoder_num_heads"]),
            patch_size=patch,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=tuple(c.get("encoder_global_attn_indexes", ())),
            window_size=int(c.get("window_size", 14)),
            out_chans=dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(image_size // patch, image_size // patch),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
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
        ),
        pixel_mean=list(SAM_PIXEL_MEAN),
        pixel_std=list(SAM_PIXEL_STD),
    )


def load_sam_checkpoint(model: "SegLlavaForCausalLM", path: Union[str, os.PathLike]) -> None:
    """Load a segment_anything checkpoint (``sam_vit_h_4b8939.pth`` ...) into ``model.visual_model``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"SAM checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a SAM state dict"
        raise CheckpointError(f"{path} is not a readable PyTorch state dict ({type(err).__name__}: {err})") from None
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{path} does not hold a state dict")
    if all(k.startswith("visual_model.") for k in state):
        state = {k[len("visual_model."):]: v for k, v in state.items()}
    own = model.visual_model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        variant = model.config.sam_config.get("variant")
        raise CheckpointError(
            f"{path} is not a SAM checkpoint for this model (SAM variant {variant!r}): "
            f"{len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:2]}), {len(wrong)} of another shape (e.g. {wrong[:2]})"
        )
    model.visual_model.load_state_dict(state)


# --------------------------------------------------------------------------- losses (LISA's)


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


# --------------------------------------------------------------------------- config + model


@strict
class SegLlavaConfig(LlavaConfig):
    """``LlavaConfig`` plus the segmentation head.

    Attributes:
        seg_token_id: id of the [SEG] token (set when the token is added).
        sam_config: ``build_sam``'s dict ({"variant": "vit_h"} by default).
        out_dim: width of the projected [SEG] embedding (SAM's prompt width, 256).
        ce_loss_weight / bce_loss_weight / dice_loss_weight: LISA's 1.0 / 2.0 / 0.5.
        image_geometry: how CLIP's preprocessing maps the image onto the token grid:
            "center_crop" (CLIPImageProcessor) or "pad_square" (expand to square).
        train_sam_encoder: run SAM's image encoder with gradients (LISA: never, no_grad).
    """

    model_type = "seg_llava"

    seg_token_id: int | None = None
    sam_config: dict | None = None
    out_dim: int = 256
    ce_loss_weight: float = 1.0
    bce_loss_weight: float = 2.0
    dice_loss_weight: float = 0.5
    image_geometry: str = "center_crop"
    train_sam_encoder: bool = False

    def __post_init__(self, **kwargs):
        if self.sam_config is None:
            self.sam_config = {"variant": "vit_h"}
        super().__post_init__(**kwargs)


@dataclass
class SegLlavaOutput(ModelOutput):
    """Training forward output: LISA's losses, the logits and the mask logits per row."""

    loss: Optional[Tensor] = None
    ce_loss: Optional[Tensor] = None
    mask_bce_loss: Optional[Tensor] = None
    mask_dice_loss: Optional[Tensor] = None
    mask_loss: Optional[Tensor] = None
    logits: Optional[Tensor] = None
    pred_masks: Optional[List[Tensor]] = None


@dataclass
class SegLlavaGeneration(ModelOutput):
    """``segment`` output.

    Attributes:
        sequences: [B, T] prompt + generated tokens.
        masks: per row, [n_SEG, H, W] bool masks at the original image size ([0, H, W] for a
            row without [SEG]).
        mask_logits: the same as logits (float).
        seg_counts: [B] number of [SEG] tokens per row.
        has_object: [B] False for rows whose answer has no [SEG] ("no object").
        hidden_states: [B, T, D] last-layer hidden states aligned with ``sequences`` (only
            with ``output_hidden_states=True``; see ``seg_similarity``).
    """

    sequences: Optional[Tensor] = None
    masks: Optional[List[Tensor]] = None
    mask_logits: Optional[List[Tensor]] = None
    seg_counts: Optional[Tensor] = None
    has_object: Optional[Tensor] = None
    hidden_states: Optional[Tensor] = None


def _init_like_constructor(module: nn.Module) -> None:
    """Re-create the initial values of segment_anything's modules and of ``nn`` layers (the
    parameters a checkpoint has already filled are left alone by transformers' guards)."""
    from segment_anything.modeling import ImageEncoderViT, Sam
    from segment_anything.modeling.common import LayerNorm2d
    from segment_anything.modeling.image_encoder import Attention
    from segment_anything.modeling.prompt_encoder import PositionEmbeddingRandom
    from transformers import initialization as init

    if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Embedding, nn.LayerNorm)):
        module.reset_parameters()
    elif isinstance(module, LayerNorm2d):
        init.ones_(module.weight)
        init.zeros_(module.bias)
    elif isinstance(module, ImageEncoderViT) and module.pos_embed is not None:
        init.zeros_(module.pos_embed)
    elif isinstance(module, Attention) and getattr(module, "use_rel_pos", False):
        init.zeros_(module.rel_pos_h)
        init.zeros_(module.rel_pos_w)
    elif isinstance(module, PositionEmbeddingRandom):
        init.normal_(module.positional_encoding_gaussian_matrix)
    elif isinstance(module, Sam):  # non-persistent buffers: never in a checkpoint
        init.copy_(module.pixel_mean, torch.tensor(SAM_PIXEL_MEAN).view(-1, 1, 1))
        init.copy_(module.pixel_std, torch.tensor(SAM_PIXEL_STD).view(-1, 1, 1))


def _hw_tensor(x: Any, rows: int, name: str) -> Tensor:
    t = torch.as_tensor(x).detach().to("cpu", torch.long)
    if t.dim() == 1 and t.numel() == 2:
        t = t.expand(rows, 2)
    if t.shape != (rows, 2):
        raise InputError(f"{name} must be [{rows}, 2] (H, W per row), got {tuple(t.shape)}")
    return t


class SegLlavaForCausalLM(LlavaForConditionalGeneration):
    """LISA's architecture on transformers' LLaVA and segment_anything's stock SAM.

    Hook points (what ``sasp.adapters.wrap`` needs): ``text_hidden_fcs[0]`` receives the full
    last-layer hidden states [B, T, D]; ``visual_model`` is SAM, whose prompt encoder is
    called once per [SEG]; ``seg_token_idx`` is the [SEG] id; the entry points are
    ``forward`` (training, with ``sam_pixel_values``) and ``segment`` (inference).
    """

    config_class = SegLlavaConfig

    def __init__(self, config: SegLlavaConfig):
        super().__init__(config)
        self.visual_model = build_sam(config.sam_config)
        width = int(self.visual_model.prompt_encoder.embed_dim)
        if config.out_dim != width:
            raise ValueError(f"out_dim={config.out_dim} must equal SAM's prompt width {width}")
        hidden = config.text_config.hidden_size
        self.text_hidden_fcs = nn.ModuleList(
            [nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, config.out_dim), nn.Dropout(0.0))]
        )
        self.post_init()

    # -- ids and sizes -------------------------------------------------------------------

    @property
    def seg_token_idx(self) -> int:
        if self.config.seg_token_id is None:
            raise ValueError("config.seg_token_id is not set; add the [SEG] token first (SegLlavaForCausalLM.from_llava)")
        return int(self.config.seg_token_id)

    @property
    def num_patches(self) -> int:
        """N_p: patch tokens per image (CLS dropped by the "default" feature strategy)."""
        vc = self.config.vision_config
        if self.config.vision_feature_select_strategy != "default":
            raise ValueError("SasP needs vision_feature_select_strategy='default' (patch tokens only, no CLS)")
        return (vc.image_size // vc.patch_size) ** 2

    @property
    def max_context(self) -> int:
        return int(self.config.text_config.max_position_embeddings)

    def _init_weights(self, module: nn.Module) -> None:
        """transformers' initialisation for the LLaVA modules; SAM and the projection get what
        their own constructors give (PyTorch defaults, zero position embeddings, SAM's pixel
        statistics), so that a model loaded from a LLaVA checkpoint starts like LISA's."""
        own = self.__dict__.get("_modules", {})
        if "_own_ids" not in self.__dict__ and "visual_model" in own and "text_hidden_fcs" in own:
            self.__dict__["_own_ids"] = {id(m) for key in ("visual_model", "text_hidden_fcs") for m in own[key].modules()}
        if id(module) in self.__dict__.get("_own_ids", ()):
            _init_like_constructor(module)
            return
        super()._init_weights(module)

    # -- SAM side ------------------------------------------------------------------------

    def _apply(self, fn, recurse: bool = True):
        # Stock SAM's random-frequency position encoding multiplies float32 coordinates by its
        # Gaussian matrix, so that buffer must stay float32 when the model moves to fp16/bf16
        # (LISA's fork edits SAM for this; here the buffer is kept instead).
        if "visual_model" not in self._modules:  # still inside __init__
            return super()._apply(fn, recurse)
        pe = self.visual_model.prompt_encoder.pe_layer
        kept = pe.positional_encoding_gaussian_matrix
        out = super()._apply(fn, recurse)
        moved = pe.positional_encoding_gaussian_matrix
        if moved.dtype != torch.float32 and kept.dtype == torch.float32:
            pe.positional_encoding_gaussian_matrix = kept.to(moved.device)
        return out

    def _sam_position_encoding_float32(self) -> None:
        pe = self.visual_model.prompt_encoder.pe_layer
        if pe.positional_encoding_gaussian_matrix.dtype != torch.float32:  # e.g. built under a bf16 default dtype
            pe.positional_encoding_gaussian_matrix = pe.positional_encoding_gaussian_matrix.float()

    def get_visual_embs(self, sam_pixel_values: Tensor) -> Tensor:
        """SAM image embeddings [B, C, h, w]; without gradient unless ``config.train_sam_encoder``."""
        encoder = self.visual_model.image_encoder
        x = sam_pixel_values.to(next(encoder.parameters()).dtype)
        if self.config.train_sam_encoder:
            return encoder(x)
        with torch.no_grad():
            return encoder(x)

    def decode_masks(
        self,
        tokens: Tensor,
        hidden_states: Tensor,
        image_embeddings: Tensor,
        image_hw: Tensor,
        sam_input_hw: Tensor,
    ) -> Tuple[List[Tensor], Tensor]:
        """Mask logits for every [SEG]: per row [n_SEG, H, W] at the original image size.

        Args:
            tokens (Tensor): [B, T] token ids, aligned with ``hidden_states``.
            hidden_states (Tensor): [B, T, D] last-layer hidden states.
            image_embeddings (Tensor): [B, C, h, w] SAM image embeddings.
            image_hw (Tensor): [B, 2] original (H, W); sam_input_hw: [B, 2] size after SAM's
                ResizeLongestSide (before padding).

        Returns:
            (list[Tensor], Tensor): the mask logits per row, and the [SEG] count per row [B].
        """
        if tokens.shape != hidden_states.shape[:2]:
            raise ValueError(f"tokens {tuple(tokens.shape)} and hidden states {tuple(hidden_states.shape[:2])} must align")
        seg = torch.zeros_like(tokens, dtype=torch.bool)
        seg[:, :-1] = tokens[:, 1:] == self.seg_token_idx  # the hidden state that predicts [SEG]
        projected = self.text_hidden_fcs[0](hidden_states)  # full [B, T, D]: SasP's hook point
        embeds = projected[seg]  # [M, C], row-major
        counts = seg.sum(1).cpu()
        sam = self.visual_model
        self._sam_position_encoding_float32()
        dense_pe = sam.prompt_encoder.get_dense_pe()
        masks: List[Tensor] = []
        start = 0
        for b, n in enumerate(counts.tolist()):
            h, w = (int(v) for v in image_hw[b])
            if n == 0:
                masks.append(image_embeddings.new_zeros((0, h, w), dtype=torch.float32))
                continue
            sparse, dense = [], None
            for j in range(start, start + n):
                # stock SAM: one prompt per call (no points/boxes/masks); the [SEG] embedding
                # goes after the sparse prompt, as in LISA's fork
                s, dense = sam.prompt_encoder(points=None, boxes=None, masks=None)
                sparse.append(torch.cat([s.to(embeds.dtype), embeds[j].view(1, 1, -1)], 1))
            start += n
            low_res, _ = sam.mask_decoder(
                image_embeddings=image_embeddings[b : b + 1],
                image_pe=dense_pe.to(embeds.dtype),
                sparse_prompt_embeddings=torch.cat(sparse, 0),
                dense_prompt_embeddings=dense.to(embeds.dtype),
                multimask_output=False,
            )
            sh, sw = (int(v) for v in sam_input_hw[b])
            pred = sam.postprocess_masks(low_res, input_size=(sh, sw), original_size=(h, w))
            masks.append(pred[:, 0])
        return masks, counts

    # -- entry points --------------------------------------------------------------------

    def forward(
        self,
        input_ids: Optional[Tensor] = None,
        pixel_values: Optional[Tensor] = None,
        attention_mask: Optional[Tensor] = None,
        labels: Optional[Tensor] = None,
        sam_pixel_values: Optional[Tensor] = None,
        image_hw: Optional[Tensor] = None,
        sam_input_hw: Optional[Tensor] = None,
        gt_masks: Optional[Sequence[Tensor]] = None,
        **kwargs: Any,
    ):
        """Training forward (LISA's ``model_forward``), or plain LLaVA when ``sam_pixel_values``
        is None (what ``generate`` calls).

        Args:
            input_ids (Tensor): [B, T] with N_p image tokens per row (``SegLlavaProcessor``).
            pixel_values (Tensor): [B, 3, S, S] CLIP input.
            labels (Tensor): [B, T] LM targets (-100 = ignored) for the CE loss.
            sam_pixel_values (Tensor): [B, 3, 1024, 1024] SAM input.
            image_hw (Tensor): [B, 2] original (H, W); sam_input_hw: [B, 2] resized size.
            gt_masks (list[Tensor]): per row [n_SEG, H, W] target masks for BCE + Dice.

        Returns:
            SegLlavaOutput with ``loss = ce_w * CE + bce_w * BCE + dice_w * Dice``.
        """
        if sam_pixel_values is None:
            return super().forward(
                input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask, labels=labels, **kwargs
            )
        rows = input_ids.shape[0]
        image_hw = _hw_tensor(image_hw, rows, "image_hw")
        sam_input_hw = _hw_tensor(sam_input_hw, rows, "sam_input_hw")
        kwargs["output_hidden_states"] = True
        out = super().forward(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask, labels=labels, **kwargs)
        image_embeddings = self.get_visual_embs(sam_pixel_values)
        pred_masks, counts = self.decode_masks(input_ids, out.hidden_states[-1], image_embeddings, image_hw, sam_input_hw)

        cfg = self.config
        ce = out.loss * cfg.ce_loss_weight if out.loss is not None else None
        bce = dice = mask_loss = None
        if gt_masks is not None:
            if len(gt_masks) != rows:
                raise InputError(f"gt_masks has {len(gt_masks)} entries for {rows} rows")
            bce_sum = dice_sum = out.logits.new_zeros((), dtype=torch.float32)
            num = 0
            for b, (pred, gt) in enumerate(zip(pred_masks, gt_masks)):
                if gt.shape[0] != pred.shape[0] or gt.shape[-2:] != pred.shape[-2:]:
                    raise InputError(
                        f"row {b}: {pred.shape[0]} [SEG] tokens predict masks {tuple(pred.shape)}, "
                        f"gt_masks[{b}] is {tuple(gt.shape)}"
                    )
                if pred.shape[0] == 0:
                    continue
                gt = gt.to(pred.device, torch.float32)
                n = gt.shape[0]
                bce_sum = bce_sum + sigmoid_ce_loss(pred.float(), gt, n) * n
                dice_sum = dice_sum + dice_loss(pred.float(), gt, n) * n
                num += n
            bce = cfg.bce_loss_weight * bce_sum / (num + 1e-8)
            dice = cfg.dice_loss_weight * dice_sum / (num + 1e-8)
            mask_loss = bce + dice
        parts = [p for p in (ce, mask_loss) if p is not None]
        loss = sum(parts[1:], parts[0]) if parts else None
        return SegLlavaOutput(
            loss=loss, ce_loss=ce, mask_bce_loss=bce, mask_dice_loss=dice, mask_loss=mask_loss,
            logits=out.logits, pred_masks=pred_masks,
        )

    @torch.no_grad()
    def segment(
        self,
        input_ids: Tensor,
        pixel_values: Tensor,
        sam_pixel_values: Tensor,
        image_hw: Tensor,
        sam_input_hw: Tensor,
        attention_mask: Optional[Tensor] = None,
        max_new_tokens: int = 32,
        mask_threshold: float = 0.0,
        output_hidden_states: bool = False,
        **generate_kwargs: Any,
    ) -> SegLlavaGeneration:
        """Inference (LISA's ``evaluate``), batched: generate the answers, then a mask per [SEG].

        Rows are left-padded (``SegLlavaProcessor`` does it). Greedy decoding unless
        ``generate_kwargs`` say otherwise; the image token is never generated. With
        ``max_new_tokens=0`` the given ``input_ids`` (prompt + answer) are scored as they are
        (teacher forcing), e.g. to segment with a fixed answer "Sure, [SEG].".

        Returns:
            SegLlavaGeneration; a row whose answer has no [SEG] has ``has_object`` False and
            an empty [0, H, W] mask tensor.
        """
        rows = input_ids.shape[0]
        image_hw = _hw_tensor(image_hw, rows, "image_hw")
        sam_input_hw = _hw_tensor(sam_input_hw, rows, "sam_input_hw")
        if max_new_tokens < 0:
            raise InputError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        total = input_ids.shape[1] + max_new_tokens
        if total > self.max_context:
            raise InputError(
                f"the prompt takes {input_ids.shape[1]} tokens (image included) and {max_new_tokens} new tokens "
                f"are requested: {total} > the model's context of {self.max_context} tokens; shorten the prompt"
            )
        if generate_kwargs.get("num_beams", 1) != 1:
            raise InputError("segment() decodes one sequence per row: num_beams must be 1")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if max_new_tokens > 0:
            suppress = list(generate_kwargs.pop("suppress_tokens", None) or []) + [int(self.config.image_token_id)]
            generate_kwargs.setdefault("do_sample", False)
            gen = self.generate(
                input_ids=input_ids,
                pixel_values=pixel_values,
                attention_mask=attention_mask,
                max_new_tokens=max_new_tokens,
                suppress_tokens=suppress,
                output_hidden_states=True,
                return_dict_in_generate=True,
                **generate_kwargs,
            )
            sequences = gen.sequences
            hidden = torch.cat([step[-1] for step in gen.hidden_states], 1)  # [B, T - 1, D]
            hidden = F.pad(hidden, (0, 0, 0, sequences.shape[1] - hidden.shape[1]))
        else:
            sequences = input_ids
            out = super().forward(
                input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask, output_hidden_states=True
            )
            hidden = out.hidden_states[-1]
        image_embeddings = self.get_visual_embs(sam_pixel_values)
        logits, counts = self.decode_masks(sequences, hidden, image_embeddings, image_hw, sam_input_hw)
        return SegLlavaGeneration(
            sequences=sequences,
            masks=[m > mask_threshold for m in logits],
            mask_logits=logits,
            seg_counts=counts,
            has_object=counts > 0,
            hidden_states=hidden if output_hidden_states else None,
        )

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_llava(
        cls,
        llava: Union[str, os.PathLike, LlavaForConditionalGeneration],
        processor: Optional[Union["SegLlavaProcessor", LlavaProcessor]] = None,
        sam_config: Optional[Mapping[str, Any]] = None,
        sam_checkpoint: Optional[Union[str, os.PathLike]] = None,
        config_overrides: Optional[Mapping[str, Any]] = None,
        **from_pretrained_kwargs: Any,
    ) -> Tuple["SegLlavaForCausalLM", "SegLlavaProcessor"]:
        """Turn a LLaVA-1.5-style checkpoint (folder, hub id or loaded model) into this model.

        The LLaVA weights load through ``from_pretrained`` (``from_pretrained_kwargs``: dtype,
        device_map, ...); [SEG] is added to the tokenizer and the embeddings are resized; SAM
        comes from ``sam_checkpoint`` (constructor initialisation when None) and the projection
        starts from its constructor initialisation, as in LISA before training.
        ``config_overrides`` set ``SegLlavaConfig`` fields (loss weights, image_geometry ...).

        Returns:
            (model, processor), the model in eval mode.
        """
        sam_config = dict(sam_config or {"variant": "vit_h"})
        extra = dict(config_overrides or {})
        extra.setdefault("out_dim", int(build_sam(sam_config).prompt_encoder.embed_dim) if sam_config.get("variant") == "custom" else 256)
        skip = ("model_type", "transformers_version", "architectures", "_name_or_path")
        if isinstance(llava, LlavaForConditionalGeneration):
            if processor is None:
                raise ValueError("pass the processor that goes with the loaded LLaVA model")
            fields = {k: v for k, v in llava.config.to_dict().items() if k not in skip}
            model = cls(SegLlavaConfig(**fields, sam_config=sam_config, **extra))
            missing, unexpected = model.load_state_dict(llava.state_dict(), strict=False)
            missing = [k for k in missing if not k.startswith(("visual_model.", "text_hidden_fcs."))]
            if missing or unexpected:
                raise CheckpointError(f"not a LLaVA model: missing {missing[:3]}, unexpected {unexpected[:3]}")
            model.generation_config = copy.deepcopy(llava.generation_config)
            model.to(llava.dtype)
        else:
            if processor is None:
                processor = LlavaProcessor.from_pretrained(llava)
            fields = {k: v for k, v in LlavaConfig.from_pretrained(llava).to_dict().items() if k not in skip}
            config = SegLlavaConfig(**fields, sam_config=sam_config, **extra)
            from transformers.utils import logging as hf_logging

            level = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()  # the load report would list every SAM key as missing
            try:
                model, info = cls.from_pretrained(llava, config=config, output_loading_info=True, **from_pretrained_kwargs)
            finally:
                hf_logging.set_verbosity(level)
            missing = [k for k in info["missing_keys"] if not k.startswith(("visual_model.", "text_hidden_fcs."))]
            if missing or info["unexpected_keys"]:
                raise CheckpointError(
                    f"{llava} is not a LLaVA-1.5 checkpoint for this architecture: missing {sorted(missing)[:3]}, "
                    f"unexpected {sorted(info['unexpected_keys'])[:3]}"
                )
        if isinstance(processor, LlavaProcessor):
            processor = SegLlavaProcessor(processor)
        tokenizer = processor.tokenizer
        tokenizer.add_tokens([SEG_TOKEN], special_tokens=True)
        model.config.seg_token_id = int(tokenizer.convert_tokens_to_ids(SEG_TOKEN))
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
        if sam_checkpoint is not None:
            load_sam_checkpoint(model, sam_checkpoint)
        processor.sam_image_size = int(model.visual_model.image_encoder.img_size)
        return model.eval(), processor


# --------------------------------------------------------------------------- processor


class SegLlavaProcessor:
    """``LlavaProcessor`` (tokenizer + CLIP image processor) plus SAM's preprocessing.

    ``processor(images, prompts, answers=None)`` returns a ``BatchFeature`` with everything
    ``SegLlavaForCausalLM.segment`` / ``forward`` take: ``input_ids`` and ``attention_mask``
    (left-padded, N_p image tokens per row), ``pixel_values`` (CLIP), ``sam_pixel_values``
    ([B, 3, S, S]: ResizeLongestSide(S), normalised, zero-padded), ``image_hw`` and
    ``sam_input_hw``. ``answers`` are appended after the template (for teacher forcing or
    training).
    """

    def __init__(self, llava_processor: LlavaProcessor, sam_image_size: int = 1024, prompt_template: str = PROMPT_TEMPLATE):
        self.llava_processor = llava_processor
        self.sam_image_size = int(sam_image_size)
        self.prompt_template = prompt_template

    @property
    def tokenizer(self):
        return self.llava_processor.tokenizer

    @property
    def image_processor(self):
        return self.llava_processor.image_processor

    def build_prompt(self, prompt: str, row: int = 0) -> str:
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(f"prompt {row} is empty; say what to segment, e.g. 'Segment the red circle.'")
        for special in (SEG_TOKEN, IMAGE_TOKEN):
            if special in prompt:
                raise InputError(f"prompt {row} contains the special token {special}; remove it")
        return self.prompt_template.format(prompt=prompt.strip())

    def preprocess_sam(self, images: Sequence[np.ndarray]) -> Tuple[Tensor, Tensor]:
        """SAM's input: ResizeLongestSide, (x - mean) / std, zero padding to S x S."""
        from segment_anything.utils.transforms import ResizeLongestSide

        size = self.sam_image_size
        resize = ResizeLongestSide(size)
        mean = torch.tensor(SAM_PIXEL_MEAN).view(3, 1, 1)
        std = torch.tensor(SAM_PIXEL_STD).view(3, 1, 1)
        out = torch.zeros(len(images), 3, size, size)
        hw = torch.zeros(len(images), 2, dtype=torch.long)
        for i, img in enumerate(images):
            x = torch.from_numpy(resize.apply_image(img)).permute(2, 0, 1).float()
            h, w = x.shape[-2:]
            out[i, :, :h, :w] = (x - mean) / std
            hw[i] = torch.tensor([h, w])
        return out, hw

    def __call__(
        self,
        images: Sequence[Any],
        prompts: Sequence[str],
        answers: Optional[Sequence[Optional[str]]] = None,
    ) -> BatchFeature:
        from PIL import Image

        from sasp.viz import load_image

        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(images, (list, tuple)):
            images = [images]
        if len(images) != len(prompts):
            raise InputError(f"{len(images)} images for {len(prompts)} prompts; give one image per prompt")
        if answers is not None and len(answers) != len(prompts):
            raise InputError(f"{len(answers)} answers for {len(prompts)} prompts")
        arrays = []
        for i, img in enumerate(images):
            try:
                arrays.append(load_image(img))
            except FileNotFoundError:
                raise InputError(f"image {i}: file not found: {img}") from None
            except Exception as err:  # noqa: BLE001 - PIL raises many kinds for a bad file
                raise InputError(f"image {i}: cannot read {img!r} as an image ({type(err).__name__}: {err})") from None
            if min(arrays[-1].shape[:2]) < 1:
                raise InputError(f"image {i} is empty")
        texts = [self.build_prompt(p, i) for i, p in enumerate(prompts)]
        if answers is not None:
            texts = [t + (" " + a if a else "") for t, a in zip(texts, answers)]
        tok = self.tokenizer
        side, tok.padding_side = tok.padding_side, "left"
        try:
            enc = self.llava_processor(
                images=[Image.fromarray(a) for a in arrays], text=texts, return_tensors="pt", padding=True
            )
        finally:
            tok.padding_side = side
        sam_pixel_values, sam_input_hw = self.preprocess_sam(arrays)
        return BatchFeature(
            {
                "input_ids": enc["input_ids"],
                "attention_mask": enc["attention_mask"],
                "pixel_values": enc["pixel_values"],
                "sam_pixel_values": sam_pixel_values,
                "image_hw": torch.tensor([a.shape[:2] for a in arrays], dtype=torch.long),
                "sam_input_hw": sam_input_hw,
            }
        )

    def decode(self, sequences: Tensor, prompt_length: int = 0) -> List[str]:
        """The generated answers (tokens after ``prompt_length``), [SEG] kept, padding dropped."""
        tok = self.tokenizer
        skip = {tok.pad_token_id, tok.eos_token_id, tok.bos_token_id}
        texts = []
        for row in sequences[:, prompt_length:].tolist():
            texts.append(tok.decode([t for t in row if t not in skip], skip_special_tokens=False).strip())
        return texts

    def save_pretrained(self, path: Union[str, os.PathLike]) -> None:
        self.llava_processor.save_pretrained(path)
        with open(os.path.join(path, "sasp_processor.json"), "w") as f:
            json.dump({"sam_image_size": self.sam_image_size, "prompt_template": self.prompt_template}, f, indent=2)

    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike]) -> "SegLlavaProcessor":
        extra: Dict[str, Any] = {}
        meta = os.path.join(path, "sasp_processor.json")
        if os.path.isfile(meta):
            with open(meta) as f:
                extra = json.load(f)
        return cls(LlavaProcessor.from_pretrained(path), **extra)


# --------------------------------------------------------------------------- tiny model


_TINY_WORDS = (
    "user assistant sure it is the a an of in on at to and or not no yes there here "
    "please segment find show where what which object objects image picture red green blue "
    "yellow white black circle square box cat dog person car left right top bottom center "
    "middle big small one two that this can you , . ? ! :"
).split()


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A small word-level tokenizer built in code (no download): lower-cased words and
    punctuation, unknown words -> ``<unk>``, special tokens ``<s> </s> <pad> <image> [SEG]``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    specials = ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN, SEG_TOKEN]
    vocab = {w: i for i, w in enumerate(specials + [w for w in _TINY_WORDS if w not in specials])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    core.decoder = decoders.WordPiece(prefix="##")
    core.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        padding_side="left",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
    )


def build_tiny(
    seed: int = 0,
    image_size: int = 168,
    patch_size: int = 14,
    hidden_size: int = 64,
    max_context: int = 512,
    sam_config: Optional[Mapping[str, Any]] = None,
) -> Tuple[SegLlavaForCausalLM, SegLlavaProcessor]:
    """A tiny random ``SegLlavaForCausalLM`` and its processor, built offline in about a second.

    CLIP ViT (2 layers, 32 wide, 168 px / 14 px patches: a 12 x 12 token grid), Llama (2
    layers, 64 wide, 512 positions), SAM with the stock classes at 256 px (released SAMs use
    1024; the size is read from the model everywhere) and a 32-wide 2-layer encoder. Same code
    paths as a full-size model; the outputs are meaningless.
    """
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        tok = build_tiny_tokenizer()
        vision = CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=image_size, patch_size=patch_size, projection_dim=32,
        )
        text = LlamaConfig(
            vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=max_context,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )
        sam_config = dict(sam_config or TINY_SAM_CONFIG)
        n_p = (image_size // patch_size) ** 2
        config = SegLlavaConfig(
            vision_config=vision,
            text_config=text,
            image_token_index=int(tok.convert_tokens_to_ids(IMAGE_TOKEN)),
            image_seq_length=n_p,
            seg_token_id=int(tok.convert_tokens_to_ids(SEG_TOKEN)),
            sam_config=sam_config,
            out_dim=int(sam_config.get("prompt_embed_dim", 256)),
        )
        model = SegLlavaForCausalLM(config).eval()
    finally:
        torch.random.set_rng_state(generator_state)
    gc = model.generation_config
    gc.bos_token_id, gc.eos_token_id, gc.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    llava_processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )
    return model, SegLlavaProcessor(llava_processor, sam_image_size=int(model.visual_model.image_encoder.img_size))


# --------------------------------------------------------------------------- loading


def sam_variant_of(checkpoint: Union[str, os.PathLike]) -> str:
    """"vit_h", "vit_l" or "vit_b" from a segment_anything checkpoint's image-encoder width."""
    try:
        state = torch.load(os.fspath(checkpoint), map_location="meta", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a SAM state dict"
        raise CheckpointError(f"{checkpoint} is not a readable PyTorch state dict ({type(err).__name__}: {err})") from None
    key = "image_encoder.patch_embed.proj.weight"
    weight = state.get(key, state.get("visual_model." + key)) if isinstance(state, Mapping) else None
    variants = {1280: "vit_h", 1024: "vit_l", 768: "vit_b"}
    if weight is None or int(weight.shape[0]) not in variants:
        raise CheckpointError(f"{checkpoint} is not a released SAM checkpoint (vit_h, vit_l or vit_b)")
    return variants[int(weight.shape[0])]


def load_model(
    path: Union[str, os.PathLike],
    sam_checkpoint: Optional[str] = None,
    sam_config: Optional[Mapping[str, Any]] = None,
) -> Tuple[SegLlavaForCausalLM, SegLlavaProcessor]:
    """Load ``(model, processor)`` from a folder written by ``save_pretrained`` (model and
    processor in the same folder), or convert a LLaVA-1.5 folder: SAM then comes from
    ``sam_checkpoint`` (its variant read from the file) or ``sam_config`` (default vit_h,
    untrained). A checkpoint of another family raises ``CheckpointError``."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"model folder not found: {path}")
    if not os.path.isdir(path):
        raise CheckpointError(
            f"{path} is a file; --model expects a folder written by SegLlavaForCausalLM.save_pretrained "
            "(config.json + weights), or a LLaVA-1.5 folder. SAM .pth files go to --sam-checkpoint"
        )
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise CheckpointError(f"{path} has no config.json: not a transformers checkpoint folder")
    try:
        with open(config_file) as f:
            raw = json.load(f)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{config_file} is not readable JSON ({err})") from None
    kind = raw.get("model_type")
    arch = ", ".join(raw.get("architectures") or []) or "unknown"
    if kind == SegLlavaConfig.model_type:
        try:
            model = SegLlavaForCausalLM.from_pretrained(path).eval()
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            raise CheckpointError(f"cannot load the model weights from {path} ({type(err).__name__}: {err})") from None
        try:
            processor = SegLlavaProcessor.from_pretrained(path)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(
                f"{path} has no usable processor files ({type(err).__name__}: {err}); save them next to the model "
                "with processor.save_pretrained(folder)"
            ) from None
        if sam_checkpoint is not None:
            load_sam_checkpoint(model, sam_checkpoint)
        return model, processor
    if kind == "llava" and not any("LISA" in a or "Lisa" in a for a in raw.get("architectures") or []):
        if sam_config is None and sam_checkpoint is not None:
            sam_config = {"variant": sam_variant_of(sam_checkpoint)}
        try:
            return SegLlavaForCausalLM.from_llava(path, sam_config=sam_config, sam_checkpoint=sam_checkpoint)
        except (OSError, KeyError, TypeError) as err:
            raise CheckpointError(f"cannot load the LLaVA checkpoint {path} ({type(err).__name__}: {err})") from None
    hint = (
        " It is a LISA checkpoint: load it with LISA's code and wrap it with sasp.adapters.lisa.wrap_lisa."
        if "LISA" in arch
        else ""
    )
    raise CheckpointError(
        f"{path} holds a {kind!r} model ({arch}), not a seg_llava or LLaVA-1.5 checkpoint.{hint}"
    )


# --------------------------------------------------------------------------- SasP adapter


def _read_forward(core: nn.Module, args: Mapping[str, Any]):
    from .base import CallContext

    if args.get("sam_pixel_values") is None:
        return None  # plain LLaVA call (generate's steps): no masks, nothing to capture
    tokens = args["input_ids"]
    return CallContext(tokens=tokens, image_hw=_hw_tensor(args["image_hw"], tokens.shape[0], "image_hw"))


def _read_segment(core: nn.Module, args: Mapping[str, Any]):
    from .base import CallContext

    tokens = args["input_ids"]
    hw = _hw_tensor(args["image_hw"], tokens.shape[0], "image_hw")
    # generating: the rows are generate()'s sequences; max_new_tokens=0: the input itself
    return CallContext(tokens=tokens if args.get("max_new_tokens") == 0 else None, image_hw=hw)


def stock_prompt_count(arguments: Mapping[str, Any]) -> int:
    """Prompts in a call of segment_anything's stock ``PromptEncoder`` (its batch size)."""
    points, boxes, masks = arguments.get("points"), arguments.get("boxes"), arguments.get("masks")
    if points is not None:
        return int(points[0].shape[0])
    if boxes is not None:
        return int(boxes.shape[0])
    if masks is not None:
        return int(masks.shape[0])
    return 1


def hf_spec(model: SegLlavaForCausalLM):
    """The ``SegPipelineSpec`` of a ``SegLlavaForCausalLM`` (ids and geometry from its config)."""
    from .base import SegPipelineSpec

    cfg = model.config
    return SegPipelineSpec(
        name=HF_SPEC_NAME,
        entry_points={"forward": _read_forward, "segment": _read_segment},
        sequence_methods=("generate",),
        sam="visual_model",
        projection="text_hidden_fcs.0",
        seg_token_attr="seg_token_idx",
        image_token_id=int(cfg.image_token_id),
        seg_offset=1,
        num_patches=lambda core: core.num_patches,
        clip_size=lambda core: int(core.config.vision_config.image_size),
        geometry=cfg.image_geometry,
        prompt_count=stock_prompt_count,
    )


def seg_similarity(model: SegLlavaForCausalLM, sequences: Tensor, hidden_states: Tensor) -> Tuple[Tensor, Tensor]:
    """The similarity SasP uses for every [SEG], for inspection and pictures.

    Args:
        sequences (Tensor): [B, T] tokens, e.g. ``SegLlavaGeneration.sequences``.
        hidden_states (Tensor): [B, T, D] ``SegLlavaGeneration.hidden_states``.

    Returns:
        sim (Tensor): [M, N_p] float32 similarity of each [SEG] (row-major) with its image's
            patch tokens; ``rows`` (Tensor): [M] the row of each [SEG].
    """
    from sasp.similarity import similarity

    from .base import locate_seg_tokens

    rows, seg_pos, start = locate_seg_tokens(sequences, model.seg_token_idx, int(model.config.image_token_id), model.num_patches)
    dev = hidden_states.device
    rows_d = rows.to(dev)
    patch_idx = start.to(dev)[rows_d, None] + torch.arange(model.num_patches, device=dev)
    sim = similarity(hidden_states[rows_d[:, None], patch_idx], hidden_states[rows_d, seg_pos.to(dev)])
    return sim, rows


def wrap_hf(model: nn.Module, cfg: Optional[SasPConfig] = None, prompt: str = "both") -> nn.Module:
    """Retrofit a ``SegLlavaForCausalLM`` (bare, DDP or PEFT) with SasP in place; returns it.

    Same contract as ``sasp.adapters.lisa.wrap_lisa``: ``sasp.adapters.base.unwrap`` undoes it
    and ``disabled`` turns it off for a block.
    """
    from .base import find_core, wrap

    core = find_core(model)
    if not isinstance(core, SegLlavaForCausalLM):
        raise TypeError(f"wrap_hf expects a SegLlavaForCausalLM, got {type(core).__name__}")
    return wrap(model, hf_spec(core), cfg, prompt)


def _register_llava_key_mapping() -> None:
    """Let ``from_pretrained`` read LLaVA checkpoints saved in the legacy key layout."""
    try:
        from transformers.conversion_mapping import (
            get_checkpoint_conversion_mapping,
            register_checkpoint_conversion_mapping,
        )

        mapping = get_checkpoint_conversion_mapping("llava")
        if mapping:
            register_checkpoint_conversion_mapping(SegLlavaForCausalLM.__name__, mapping, overwrite=True)
    except Exception:  # noqa: BLE001 - older/newer transformers: the legacy layout is just unsupported
        pass


def _register_auto_classes() -> None:
    """``AutoConfig`` / ``AutoModelForImageTextToText`` know ``seg_llava`` once this module is imported."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    AutoConfig.register(SegLlavaConfig.model_type, SegLlavaConfig, exist_ok=True)
    AutoModelForImageTextToText.register(SegLlavaConfig, SegLlavaForCausalLM, exist_ok=True)


_register_llava_key_mapping()
_register_auto_classes()
