"""Tiny LISA-family models for tests, examples and benchmarks (``sasp.adapters.testing``).

Written for sasp, they reproduce the forward structure of each family faithfully on top of
transformers' Llama/CLIP classes and segment_anything's SAM classes, with random weights:

- ``TinyLlavaForCausalLM``: LLaVA-1.x as vendored by LISA/GSVA/SESAME: the ``-200``
  placeholder of each row is replaced by the N_p CLIP patch features (CLIP's penultimate
  layer, CLS dropped, through ``mm_projector``), rows are right-padded, and ``forward`` returns
  every layer's hidden states in train mode and only the last layer in eval mode (LISA, GSVA)
  or always the last layer (SESAME, READ).
- ``TextPromptEncoder``: the LISA fork of SAM's prompt encoder, whose ``text_embeds`` are
  appended after the point (and box) tokens.
- ``TinyLISA`` / ``TinyGSVA`` / ``TinySESAME``: ``model_forward`` (training and validation)
  and ``evaluate`` (generation) as each family writes them: the [SEG] gather with the
  "image in front" shift of N_p - 1, the projection applied to the full last-layer hidden
  states, SAM once per image (LISA, SESAME) or once per conversation (GSVA, [REJ] gets no
  mask; ``reeval`` rewrites [REJ] -> [SEG] in the caller's ``input_ids``), SESAME's ``None``
  rows that skip SAM.
- ``TinyREAD``: SESAME-structured, but prompts SAM with points of its own (like READ's class).

Importing this module imports transformers and segment_anything.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.modeling.prompt_encoder import PositionEmbeddingRandom
from segment_anything.utils.transforms import ResizeLongestSide
from torch import Tensor, nn
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM, LlamaModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from sasp.adapters.hf import dice_loss, sigmoid_ce_loss  # LISA's mask losses

IGNORE_INDEX = -100
IMAGE_TOKEN_INDEX = -200

# token ids of the tiny vocabulary
PAD, BOS, EOS = 0, 1, 2
SEG, REJ = 60, 61
VOCAB = 64

__all__ = [
    "IMAGE_TOKEN_INDEX",
    "SEG",
    "REJ",
    "TextPromptEncoder",
    "TinyGSVA",
    "TinyLISA",
    "TinyLlavaForCausalLM",
    "TinyREAD",
    "TinySESAME",
    "build_tiny",
    "tiny_sam",
    "make_batch",
    "make_eval_batch",
]


# --------------------------------------------------------------------------- SAM


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
    """A SAM built from segment_anything's classes with small dimensions (ViT-B's decoder is
    ``prompt_dim=256, decoder_depth=2, mlp_dim=2048, heads=8, img_size=1024, patch=16``)."""
    emb = img_size // patch
    encoder = ImageEncoderViT(
        depth=encoder_depth,
        embed_dim=encoder_dim,
        img_size=img_size,
        mlp_ratio=2,
        num_heads=heads,
        patch_size=patch,
        qkv_bias=True,
        use_rel_pos=False,
        window_size=0,
        out_chans=prompt_dim,
    )
    cls = TextPromptEncoder if text_prompts else PromptEncoder
    prompt = cls(embed_dim=prompt_dim, image_embedding_size=(emb, emb), input_image_size=(img_size, img_size), mask_in_chans=4)
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=decoder_depth, embedding_dim=prompt_dim, mlp_dim=mlp_dim, num_heads=heads),
        transformer_dim=prompt_dim,
        iou_head_depth=3,
        iou_head_hidden_dim=prompt_dim,
    )
    return Sam(image_encoder=encoder, prompt_encoder=prompt, mask_decoder=decoder, pixel_mean=[0.0] * 3, pixel_std=[1.0] * 3)


# --------------------------------------------------------------------------- LLaVA-1.x


class TinyVisionTower(nn.Module):
    """LLaVA-1.x's ``CLIPVisionTower``: CLIP's ``select_layer`` hidden states without CLS."""

    def __init__(self, config: CLIPVisionConfig, select_layer: int = -2):
        super().__init__()
        self.vision_tower = CLIPVisionModel(config)
        self.vision_tower.requires_grad_(False)
        self.select_layer = select_layer
        self.is_loaded = True

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        out = self.vision_tower(images.to(device=self.device, dtype=self.dtype), output_hidden_states=True)
        return out.hidden_states[self.select_layer][:, 1:].to(images.dtype)

    @property
    def dummy_feature(self) -> Tensor:
        return torch.zeros(1, self.hidden_size, device=self.device, dtype=self.dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.vision_tower.dtype

    @property
    def device(self) -> torch.device:
        return self.vision_tower.device

    @property
    def config(self) -> CLIPVisionConfig:
        return self.vision_tower.config

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_patches(self) -> int:
        return (self.config.image_size // self.config.patch_size) ** 2


class TinyLlavaModel(LlamaModel):
    """``LlavaLlamaModel``: a Llama with a vision tower and an ``mm_projector``."""

    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self.vision_tower = TinyVisionTower(CLIPVisionConfig(**config.tiny_vision))
        self.mm_projector = nn.Linear(self.vision_tower.hidden_size, config.hidden_size)

    def get_vision_tower(self) -> TinyVisionTower:
        return self.vision_tower


class TinyLlavaForCausalLM(LlamaForCausalLM):
    """``LlavaLlamaForCausalLM`` of the LISA family's vendored LLaVA-1.x."""

    hidden_states_in_train_mode = "all"  # LISA, GSVA: all layers in train mode, the last one in eval

    def __init__(self, config: LlamaConfig):
        super(LlamaForCausalLM, self).__init__(config)
        self.model = TinyLlavaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_model(self) -> TinyLlavaModel:
        return self.model

    def get_vision_tower(self) -> TinyVisionTower:
        return self.get_model().get_vision_tower()

    def encode_images(self, images: Tensor) -> Tensor:
        return self.get_model().mm_projector(self.get_vision_tower()(images))

    def prepare_inputs_labels_for_multimodal(
        self, input_ids: Tensor, attention_mask: Optional[Tensor], labels: Optional[Tensor], images: Optional[Tensor]
    ) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
        """Replace each row's ``-200`` by its image's N_p patch features; right-pad the rows."""
        if images is None or input_ids.shape[1] == 1:
            return input_ids, attention_mask, None, labels
        feats = self.encode_images(images)
        embed = self.get_model().embed_tokens
        rows, row_labels, row_masks = [], [], []
        for b, ids in enumerate(input_ids):
            where = (ids == IMAGE_TOKEN_INDEX).nonzero()
            mask = attention_mask[b] if attention_mask is not None else torch.ones_like(ids, dtype=torch.bool)
            lab = labels[b] if labels is not None else None
            if len(where) == 0:
                rows.append(embed(ids) + 0.0 * self.get_model().mm_projector(self.get_vision_tower().dummy_feature).sum())
                row_labels.append(lab)
                row_masks.append(mask.bool())
                continue
            k = int(where[0])
            n_p = feats.shape[1]
            rows.append(torch.cat([embed(ids[:k]), feats[b], embed(ids[k + 1 :])]))
            row_masks.append(torch.cat([mask[:k].bool(), mask.new_ones(n_p, dtype=torch.bool), mask[k + 1 :].bool()]))
            if lab is not None:
                row_labels.append(torch.cat([lab[:k], lab.new_full((n_p,), IGNORE_INDEX), lab[k + 1 :]]))
        width = max(r.shape[0] for r in rows)
        embeds = torch.stack([F.pad(r, (0, 0, 0, width - r.shape[0])) for r in rows])
        new_mask = torch.stack([F.pad(m, (0, width - m.shape[0]), value=False) for m in row_masks])
        new_labels = None
        if labels is not None:
            new_labels = torch.stack([F.pad(l, (0, width - l.shape[0]), value=IGNORE_INDEX) for l in row_labels])
        return None, new_mask.long() if attention_mask is not None else None, embeds, new_labels

    def forward(  # type: ignore[override]
        self,
        input_ids: Optional[Tensor] = None,
        attention_mask: Optional[Tensor] = None,
        past_key_values: Any = None,
        inputs_embeds: Optional[Tensor] = None,
        labels: Optional[Tensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        images: Optional[Tensor] = None,
        return_dict: Optional[bool] = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        if inputs_embeds is None:
            input_ids, attention_mask, inputs_embeds, labels = self.prepare_inputs_labels_for_multimodal(
                input_ids, attention_mask, labels, images
            )
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            output_hidden_states=bool(output_hidden_states),
        )
        hidden = outputs.last_hidden_state
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
        if self.training and self.hidden_states_in_train_mode == "all":
            hidden_states = outputs.hidden_states
        else:
            hidden_states = hidden
        return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=hidden_states)

    def prepare_inputs_for_generation(
        self, input_ids, past_key_values=None, attention_mask=None, inputs_embeds=None, images=None, **kwargs
    ) -> Dict[str, Any]:
        return {
            "input_ids": input_ids,
            "past_key_values": None,
            "use_cache": False,
            "attention_mask": attention_mask,
            "images": images,
        }


# --------------------------------------------------------------------------- losses


def mask_losses(pred_masks: Sequence[Tensor], gt_masks: Sequence[Tensor]) -> Tuple[Tensor, Tensor]:
    bce, dice, n = 0.0, 0.0, 0
    for pred, gt in zip(pred_masks, gt_masks):
        assert gt.shape[0] == pred.shape[0], (gt.shape, pred.shape)
        bce = bce + sigmoid_ce_loss(pred, gt, num_masks=gt.shape[0]) * gt.shape[0]
        dice = dice + dice_loss(pred, gt, num_masks=gt.shape[0]) * gt.shape[0]
        n += gt.shape[0]
    return bce / (n + 1e-8), dice / (n + 1e-8)


# --------------------------------------------------------------------------- families


class _SegMixin:
    """The SAM + projection part every family adds to LLaVA (``LisaMetaModel``)."""

    def _init_seg(self, config: LlamaConfig, sam: Sam) -> None:
        inner = self.get_model()
        inner.visual_model = sam
        for p in inner.visual_model.parameters():
            p.requires_grad = False
        for p in inner.visual_model.mask_decoder.parameters():
            p.requires_grad = True
        d = config.hidden_size
        inner.text_hidden_fcs = nn.ModuleList(
            [nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, config.out_dim), nn.Dropout(0.0))]
        )

    def get_visual_embs(self, pixel_values: Tensor) -> Tensor:
        with torch.no_grad():
            return torch.cat([self.model.visual_model.image_encoder(p.unsqueeze(0)) for p in pixel_values], 0)

    def forward(self, **kwargs: Any) -> Any:  # type: ignore[override]
        if "past_key_values" in kwargs:
            return TinyLlavaForCausalLM.forward(self, **kwargs)
        return self.model_forward(**kwargs)

    def _decode(self, embeds: Tensor, image_embedding: Tensor, input_size: Any, original_size: Any, points=None) -> Tensor:
        sam = self.model.visual_model
        sparse, dense = sam.prompt_encoder(points=points, boxes=None, masks=None, text_embeds=embeds.unsqueeze(1))
        sparse = sparse.to(embeds.dtype)
        low_res, _ = sam.mask_decoder(
            image_embeddings=image_embedding.unsqueeze(0),
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return sam.postprocess_masks(low_res, input_size=input_size, original_size=original_size)[:, 0]


class TinyLISA(_SegMixin, TinyLlavaForCausalLM):
    """``LISAForCausalLM`` (dvlab-research/LISA, model/LISA.py)."""

    def __init__(self, config: LlamaConfig, sam: Sam, seg_token_idx: int = SEG):
        super().__init__(config)
        self.seg_token_idx = seg_token_idx
        self.ce_loss_weight, self.dice_loss_weight, self.bce_loss_weight = 1.0, 0.5, 2.0
        self._init_seg(config, sam)
        self.Np = self.get_vision_tower().num_patches  # LISA hard-codes 256 (255 + 1)

    def _seg_mask(self, ids: Tensor, right: bool) -> Tensor:
        mask = ids[:, 1:] == self.seg_token_idx
        parts = [torch.zeros(mask.shape[0], self.Np - 1, dtype=torch.bool, device=ids.device), mask]
        if right:
            parts.append(torch.zeros(mask.shape[0], 1, dtype=torch.bool, device=ids.device))
        return torch.cat(parts, 1)

    def model_forward(
        self,
        images: Tensor,
        images_clip: Tensor,
        input_ids: Tensor,
        labels: Tensor,
        attention_masks: Tensor,
        offset: Tensor,
        masks_list: List[Tensor],
        label_list: List[Tensor],
        resize_list: List[tuple],
        inference: bool = False,
        **kwargs: Any,
    ) -> Dict[str, Any]:
        image_embeddings = self.get_visual_embs(images)
        assert image_embeddings.shape[0] == len(offset) - 1
        seg_token_mask = self._seg_mask(input_ids, right=True)
        if inference:
            assert images_clip.shape[0] == 1
            n = input_ids.shape[0]
            out = TinyLlavaForCausalLM.forward(
                self, images=images_clip.expand(n, -1, -1, -1).contiguous(), attention_mask=attention_masks,
                input_ids=input_ids, output_hidden_states=True,
            )
            output_hidden_states = [out.hidden_states]
            output = None
        else:
            clip = torch.cat(
                [images_clip[i].unsqueeze(0).expand(int(offset[i + 1] - offset[i]), -1, -1, -1) for i in range(len(offset) - 1)]
            )
            output = TinyLlavaForCausalLM.forward(
                self, images=clip, attention_mask=attention_masks, input_ids=input_ids, labels=labels, output_hidden_states=True
            )
            output_hidden_states = output.hidden_states
        last_hidden_state = self.model.text_hidden_fcs[0](output_hidden_states[-1])
        pred_embeddings = last_hidden_state[seg_token_mask]
        counts = seg_token_mask.int().sum(-1)
        seg_offset = torch.cat([torch.zeros(1, dtype=torch.long, device=counts.device), counts.cumsum(-1)])[offset]
        pred_embeddings = [pred_embeddings[seg_offset[i] : seg_offset[i + 1]] for i in range(len(seg_offset) - 1)]
        pred_masks = [
            self._decode(pred_embeddings[i], image_embeddings[i], resize_list[i], label_list[i].shape)
            for i in range(len(pred_embeddings))
        ]
        if inference:
            return {"pred_masks": pred_masks, "gt_masks": masks_list}
        ce_loss = output.loss * self.ce_loss_weight
        bce, dice = mask_losses(pred_masks, masks_list)
        mask_loss = self.bce_loss_weight * bce + self.dice_loss_weight * dice
        return {"loss": ce_loss + mask_loss, "ce_loss": ce_loss, "mask_loss": mask_loss, "pred_masks": pred_masks}

    def evaluate(
        self, images_clip, images, input_ids, resize_list, original_size_list, max_new_tokens=32, tokenizer=None
    ) -> Tuple[Tensor, List[Tensor]]:
        with torch.no_grad():
            outputs = self.generate(
                images=images_clip,
                input_ids=input_ids,
                max_new_tokens=max_new_tokens,
                num_beams=1,
                output_hidden_states=True,
                return_dict_in_generate=True,
            )
            output_hidden_states = outputs.hidden_states[-1]
            output_ids = outputs.sequences
            seg_token_mask = self._seg_mask(output_ids, right=False)
            last_hidden_state = self.model.text_hidden_fcs[0](output_hidden_states)
            pred_embeddings = last_hidden_state[seg_token_mask]
            counts = seg_token_mask.int().sum(-1)
            seg_offset = torch.cat([torch.zeros(1, dtype=torch.long, device=counts.device), counts.cumsum(-1)])
            pred_embeddings = [pred_embeddings[seg_offset[i] : seg_offset[i + 1]] for i in range(len(seg_offset) - 1)]
            image_embeddings = self.get_visual_embs(images)
            pred_masks = [
                self._decode(pred_embeddings[i], image_embeddings[i], resize_list[i], original_size_list[i])
                for i in range(len(pred_embeddings))
            ]
        return output_ids, pred_masks


class TinyGSVA(TinyLISA):
    """``LisaGSVAForCausalLM`` (LeapLabTHU/GSVA, model/modeling_lisa_gsva.py)."""

    def __init__(self, config: LlamaConfig, sam: Sam, seg_token_idx: int = SEG, rej_token_idx: int = REJ):
        super().__init__(config, sam, seg_token_idx)
        self.rej_token_idx = rej_token_idx

    def model_forward(  # type: ignore[override]
        self,
        images: Tensor,
        images_clip: Tensor,
        input_ids: Tensor,
        labels: Tensor,
        attention_masks: Tensor,
        offset: Tensor,
        masks_list: List[Tensor],
        label_list: List[Tensor],
        resize_list: List[tuple],
        do_segs: Optional[List[bool]] = None,
        inference: bool = False,
        reeval: bool = False,
        **kwargs: Any,
    ) -> Dict[str, Any]:
        device = images.device
        image_embeddings = self.get_visual_embs(images)
        batch_size = image_embeddings.shape[0]
        assert batch_size == len(offset) - 1
        output_ids: List[Tensor] = []
        if inference:
            assert images_clip.shape[0] == 1
            n = input_ids.shape[0]
            clip = images_clip.expand(n, -1, -1, -1).contiguous()
            out = TinyLlavaForCausalLM.forward(self, images=clip, attention_mask=attention_masks, input_ids=input_ids, output_hidden_states=True)
            hidden = out.hidden_states
            for k in range(n):
                pred = out.logits[k].argmax(dim=1)
                ids = input_ids[k].clone()
                img = int((ids == IMAGE_TOKEN_INDEX).nonzero().item())
                ids = torch.cat([ids[:img], torch.zeros(self.Np, device=device, dtype=torch.long), ids[img + 1 :]])
                seg_at = (ids == self.seg_token_idx).nonzero(as_tuple=True)[0]
                rej_at = (ids == self.rej_token_idx).nonzero(as_tuple=True)[0]
                seg_val = torch.where(pred[seg_at - 1] != self.seg_token_idx, self.rej_token_idx, self.seg_token_idx)
                rej_val = torch.where(pred[rej_at - 1] != self.rej_token_idx, self.seg_token_idx, self.rej_token_idx)
                ids[seg_at], ids[rej_at] = seg_val, rej_val
                output_ids.append(ids)
            if reeval:
                input_ids[input_ids == self.rej_token_idx] = self.seg_token_idx  # in place, as GSVA does
                hidden = TinyLlavaForCausalLM.forward(
                    self, images=clip, attention_mask=attention_masks, input_ids=input_ids, output_hidden_states=True
                ).hidden_states
            output_hidden_states = [hidden]
            output = None
        else:
            clip = torch.cat(
                [images_clip[i].unsqueeze(0).expand(int(offset[i + 1] - offset[i]), -1, -1, -1) for i in range(len(offset) - 1)]
            )
            output = TinyLlavaForCausalLM.forward(
                self, images=clip, attention_mask=attention_masks, input_ids=input_ids, labels=labels, output_hidden_states=True
            )
            output_hidden_states = output.hidden_states
        last_hidden_state = self.model.text_hidden_fcs[0](output_hidden_states[-1])
        seg_token_mask = self._seg_mask(input_ids, right=True)
        rej_token_mask = input_ids[:, 1:] == self.rej_token_idx
        rej_token_mask = torch.cat(
            [torch.zeros(rej_token_mask.shape[0], self.Np - 1, dtype=torch.bool, device=device), rej_token_mask,
             torch.zeros(rej_token_mask.shape[0], 1, dtype=torch.bool, device=device)], 1
        )
        mask_list_comp = []
        for row in range(len(input_ids)):
            both = seg_token_mask[row].long() * 2 + rej_token_mask[row].long()
            both = both[both.nonzero(as_tuple=True)[0]]
            mask_list_comp.append(both.eq(2).nonzero(as_tuple=True)[0])
        pred_embeddings = last_hidden_state[seg_token_mask]
        counts = seg_token_mask.int().sum(-1)
        seg_offset = torch.cat([torch.zeros(1, dtype=torch.long, device=device), counts.cumsum(-1)])
        n_rows = len(seg_offset) - 1
        pred_embeddings = [pred_embeddings[seg_offset[i] : seg_offset[i + 1]] for i in range(n_rows)]
        mask_img_map = [int((t >= offset).long().argmin().item()) - 1 for t in range(n_rows)]
        pred_masks = [
            self._decode(
                pred_embeddings[i], image_embeddings[mask_img_map[i]], resize_list[mask_img_map[i]], label_list[mask_img_map[i]].shape
            )
            for i in range(n_rows)
        ]
        if inference:
            return {"pred_masks": pred_masks, "gt_masks": masks_list, "output_ids": output_ids}
        # training: only the [SEG] masks are trained; they go to the places of the [SEG]s among
        # the image's [SEG]/[REJ] ground truth (GSVA has one conversation per image here)
        per_image = []
        for k in range(batch_size):
            begin, end = int(offset[k]), int(offset[k + 1])
            assert end - begin == 1, "GSVA trains on one conversation per image"
            preds, comp = pred_masks[begin], mask_list_comp[begin]
            if preds.shape[0] == 0:
                per_image.append(preds)
                continue
            full = torch.zeros_like(masks_list[k], dtype=torch.float32)
            full[comp] = preds
            per_image.append(full)
        ce_loss = output.loss * self.ce_loss_weight
        bce, dice = mask_losses(per_image, masks_list)
        mask_loss = self.bce_loss_weight * bce + self.dice_loss_weight * dice
        return {"loss": ce_loss + mask_loss, "ce_loss": ce_loss, "mask_loss": mask_loss, "pred_masks": per_image}

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:  # GSVA evaluates through model_forward
        raise NotImplementedError


class TinySESAME(_SegMixin, TinyLlavaForCausalLM):
    """``SESAMEForCausalLM`` (see-say-segment/sesame, model/SESAME.py); READ's released
    checkpoints load into this class."""

    hidden_states_in_train_mode = "last"

    def __init__(self, config: LlamaConfig, sam: Sam, seg_token_idx: int = SEG):
        super().__init__(config)
        self.seg_token_idx = seg_token_idx
        self.ce_loss_weight, self.dice_loss_weight, self.bce_loss_weight = 1.0, 0.5, 2.0
        self._init_seg(config, sam)

    def _seg_mask(self, ids: Tensor, right: bool) -> Tensor:
        mask = ids[:, 1:] == self.seg_token_idx
        n = self.get_vision_tower().num_patches
        parts = [torch.zeros(mask.shape[0], n - 1, dtype=mask.dtype, device=mask.device), mask]
        if right:
            parts.append(torch.zeros(mask.shape[0], 1, dtype=mask.dtype, device=mask.device))
        return torch.cat(parts, 1)

    def generate_pred_masks(self, pred_embeddings, image_embeddings, sam_mask_shape_list, points_list=None) -> List[Tensor]:
        pred_masks = []
        for i in range(len(pred_embeddings)):
            if pred_embeddings[i] is None:
                pred_masks.append(torch.zeros(sam_mask_shape_list[i][1], device=image_embeddings.device).int())
                continue
            points = points_list[i] if points_list is not None else None
            pred_masks.append(
                self._decode(pred_embeddings[i], image_embeddings[i], sam_mask_shape_list[i][0], sam_mask_shape_list[i][1], points)
            )
        return pred_masks

    def _points(self, hidden: Tensor, seg_token_mask: Tensor, counts: Tensor, sam_mask_shape_list: Any) -> Optional[List[Any]]:
        return None

    def model_forward(
        self,
        images: Tensor,
        images_clip: Tensor,
        input_ids: Tensor,
        labels: Tensor,
        attention_masks: Tensor,
        offset: Tensor,
        masks_list: List[Tensor],
        sam_mask_shape_list: List[tuple],
        inference: bool = False,
        **kwargs: Any,
    ) -> Dict[str, Any]:
        assert len(sam_mask_shape_list) == len(offset) - 1
        seg_token_mask = self._seg_mask(input_ids, right=True)
        if inference:
            assert images_clip.shape[0] == 1
            n = input_ids.shape[0]
            out = TinyLlavaForCausalLM.forward(
                self, images=images_clip.expand(n, -1, -1, -1).contiguous(), attention_mask=attention_masks,
                input_ids=input_ids, output_hidden_states=True,
            )
            output_hidden_states, output = out.hidden_states, None
        else:
            clip = torch.cat(
                [images_clip[i].unsqueeze(0).expand(int(offset[i + 1] - offset[i]), -1, -1, -1) for i in range(len(offset) - 1)]
            )
            output = TinyLlavaForCausalLM.forward(
                self, images=clip, attention_mask=attention_masks, input_ids=input_ids, labels=labels, output_hidden_states=True
            )
            output_hidden_states = output.hidden_states
        pred_embeddings = self.model.text_hidden_fcs[0](output_hidden_states)[seg_token_mask]
        counts = seg_token_mask.int().sum(-1)
        seg_offset = torch.cat([torch.zeros(1, dtype=torch.long, device=counts.device), counts.cumsum(-1)])[offset]
        pred_embeddings = [pred_embeddings[seg_offset[i] : seg_offset[i + 1]] for i in range(len(seg_offset) - 1)]
        points = self._points(output_hidden_states, seg_token_mask, seg_offset, sam_mask_shape_list)
        pred_masks = self.generate_pred_masks(pred_embeddings, self.get_visual_embs(images), sam_mask_shape_list, points)
        if inference:
            return {"pred_masks": pred_masks, "gt_masks": masks_list}
        ce_loss = output.loss * self.ce_loss_weight
        bce, dice = mask_losses(pred_masks, masks_list)
        mask_loss = self.bce_loss_weight * bce + self.dice_loss_weight * dice
        return {"loss": ce_loss + mask_loss, "ce_loss": ce_loss, "mask_loss": mask_loss, "pred_masks": pred_masks}

    def evaluate(self, images_clip, images, input_ids, sam_mask_shape_list, max_new_tokens=32) -> Tuple[Tensor, List[Tensor], List[bool]]:
        with torch.inference_mode():
            outputs = self.generate(
                images=images_clip,
                input_ids=input_ids,
                max_new_tokens=max_new_tokens,
                num_beams=1,
                output_hidden_states=True,
                return_dict_in_generate=True,
                do_sample=False,
            )
            output_hidden_states = outputs.hidden_states[-1]
            output_ids = outputs.sequences
            seg_token_mask = self._seg_mask(output_ids, right=False)
            pred_embeddings = self.model.text_hidden_fcs[0](output_hidden_states)[seg_token_mask]
            counts = seg_token_mask.int().sum(-1)
            seg_offset = torch.cat([torch.zeros(1, dtype=torch.long, device=counts.device), counts.cumsum(-1)])
            per_row: List[Optional[Tensor]] = []
            presence = []
            for i in range(len(seg_offset) - 1):
                if counts[i] == 0:
                    per_row.append(None)
                    presence.append(False)
                else:
                    per_row.append(pred_embeddings[seg_offset[i] : seg_offset[i + 1]])
                    presence.append(True)
            points = self._points(output_hidden_states, seg_token_mask, seg_offset, sam_mask_shape_list)
            pred_masks = self.generate_pred_masks(per_row, self.get_visual_embs(images), sam_mask_shape_list, points)
        return output_ids, pred_masks, presence


class TinyREAD(TinySESAME):
    """READ's own class (rui-qian/READ, model/READ.py): SESAME-structured, but it prompts SAM
    with similarity points it computes itself (here: one positive point at each image's
    centre, in SAM's frame), alongside the text embedding."""

    def similarity_map_to_points(self, sm: Tensor, shape: Any) -> Tuple[Tensor, Tensor]:
        h, w = int(shape[0]), int(shape[1])
        return torch.tensor([[w / 2.0, h / 2.0]]), torch.tensor([1])

    def _points(self, hidden, seg_token_mask, seg_offset, sam_mask_shape_list):
        out = []
        for i in range(len(seg_offset) - 1):
            n = int(seg_offset[i + 1] - seg_offset[i])
            h, w = sam_mask_shape_list[i][0]
            out.append((torch.tensor([[[w / 2.0, h / 2.0]]]).expand(n, 1, 2).contiguous(), torch.ones(n, 1, dtype=torch.long)))
        return out


# --------------------------------------------------------------------------- builders

FAMILIES = {"lisa": TinyLISA, "gsva": TinyGSVA, "sesame": TinySESAME, "read": TinyREAD}


def build_tiny(
    family: str,
    seed: int = 0,
    hidden: int = 32,
    layers: int = 2,
    clip_image: int = 32,
    clip_patch: int = 4,
    sam: Optional[Sam] = None,
) -> nn.Module:
    """A tiny random model of ``family`` ("lisa", "gsva", "sesame", "read") in eval mode.

    CLIP: ``clip_image`` px, patch ``clip_patch`` -> N_p = (clip_image // clip_patch)^2 (64).
    SAM: ``tiny_sam()`` (64 px input, 4 x 4 embedding, prompt dim 16).
    """
    torch.manual_seed(seed)
    sam = sam if sam is not None else tiny_sam()
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        tie_word_embeddings=False,
    )
    config.tiny_vision = dict(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        image_size=clip_image, patch_size=clip_patch, projection_dim=16,
    )
    config.out_dim = sam.prompt_encoder.embed_dim
    config.use_cache = False
    model = FAMILIES[family](config, sam)
    _install_capturing_hooks(model.get_model())
    model.generation_config.use_cache = False
    model.generation_config.pad_token_id = PAD
    model.generation_config.eos_token_id = EOS
    return model.eval()


def _install_capturing_hooks(inner: nn.Module) -> None:
    """transformers 5.x installs its output-capturing hooks on the first forward of the
    outermost model it meets; with CLIP nested inside the Llama, CLIP's ``hidden_states`` are
    then wrong from the second forward on. Installing them on the Llama up front avoids it."""
    try:
        from transformers.utils.output_capturing import maybe_install_capturing_hooks
    except ImportError:  # transformers 4.x has no such hooks
        return
    maybe_install_capturing_hooks(inner)


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


def allow_only(model: nn.Module, tokens: Sequence[int]) -> None:
    """Make random-weight generation emit only ``tokens`` (suppress every other id)."""
    keep = set(int(t) for t in tokens)
    model.generation_config.suppress_tokens = [t for t in range(model.config.vocab_size) if t not in keep]
