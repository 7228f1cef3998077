"""A tiny LLaVA-1.x as the LISA family vendors it, and the SAM + projection the family adds.

Written for sasp on top of transformers' Llama / CLIP classes with random weights, it follows
the forward structure of LLaVA-1.x (``llava/model/llava_arch.py``, vendored by LISA, GSVA,
SESAME and READ): the ``-200`` placeholder of each row is replaced by the N_p CLIP patch
features (CLIP's penultimate layer, CLS dropped, through ``mm_projector``), rows are
right-padded, and ``forward`` returns every layer's hidden states in train mode and only the
last layer in eval mode (LISA, GSVA) or always the last layer (SESAME, READ). ``SegMixin`` is
LISA's ``LisaMetaModel`` part: SAM as ``model.visual_model`` and the projection
``model.text_hidden_fcs``, plus the per-family helpers the tiny families share.

Imports transformers and segment_anything.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch import Tensor, nn
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM, LlamaModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from sasp.models.seg_llava.losses import mask_losses

IGNORE_INDEX = -100
IMAGE_TOKEN_INDEX = -200

# token ids of the tiny vocabulary
PAD, BOS, EOS = 0, 1, 2
SEG, REJ = 60, 61
VOCAB = 64

__all__ = [
    "BOS",
    "EOS",
    "IGNORE_INDEX",
    "IMAGE_TOKEN_INDEX",
    "PAD",
    "REJ",
    "SEG",
    "VOCAB",
    "SegMixin",
    "TinyLlavaForCausalLM",
    "TinyLlavaModel",
    "TinyVisionTower",
]


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


class SegMixin:
    """The SAM + projection part every family adds to LLaVA (``LisaMetaModel``); mixed in
    before ``TinyLlavaForCausalLM``."""

    ce_loss_weight, dice_loss_weight, bce_loss_weight = 1.0, 0.5, 2.0

    def __init__(self, config: LlamaConfig, sam: Sam, seg_token_idx: int = SEG):
        super().__init__(config)  # type: ignore[call-arg]
        self.seg_token_idx = seg_token_idx
        self._init_seg(config, sam)

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

    def _token_mask(self, ids: Tensor, token: int, right: bool) -> Tensor:
        """[B, L - 1 + N_p - 1 (+1)] hidden-state positions of ``token`` one step ahead, with the
        "image in front" shift of N_p - 1 (LISA's ``seg_token_mask`` hack)."""
        mask = ids[:, 1:] == token
        n_p = self.get_vision_tower().num_patches
        parts = [torch.zeros(mask.shape[0], n_p - 1, dtype=torch.bool, device=ids.device), mask]
        if right:
            parts.append(torch.zeros(mask.shape[0], 1, dtype=torch.bool, device=ids.device))
        return torch.cat(parts, 1)

    def _generate(self, images_clip: Tensor, input_ids: Tensor, max_new_tokens: int, **options: Any) -> Tuple[Tensor, Any]:
        """``generate`` as the families' ``evaluate`` calls it (greedy, hidden states returned):
        the sequences and ``hidden_states[-1]``."""
        outputs = self.generate(
            images=images_clip,
            input_ids=input_ids,
            max_new_tokens=max_new_tokens,
            num_beams=1,
            output_hidden_states=True,
            return_dict_in_generate=True,
            **options,
        )
        return outputs.sequences, outputs.hidden_states[-1]

    def _llm_one_image(self, images_clip: Tensor, input_ids: Tensor, attention_masks: Tensor) -> CausalLMOutputWithPast:
        """Inference through ``model_forward``: one image, every row a conversation about it."""
        assert images_clip.shape[0] == 1
        clip = images_clip.expand(input_ids.shape[0], -1, -1, -1).contiguous()
        return TinyLlavaForCausalLM.forward(
            self, images=clip, attention_mask=attention_masks, input_ids=input_ids, output_hidden_states=True
        )

    def _llm_train(
        self, images_clip: Tensor, offset: Tensor, input_ids: Tensor, attention_masks: Tensor, labels: Tensor
    ) -> CausalLMOutputWithPast:
        """Training: image i repeated for its conversations ``offset[i]:offset[i+1]``."""
        clip = torch.cat(
            [images_clip[i].unsqueeze(0).expand(int(offset[i + 1] - offset[i]), -1, -1, -1) for i in range(len(offset) - 1)]
        )
        return TinyLlavaForCausalLM.forward(
            self, images=clip, attention_mask=attention_masks, input_ids=input_ids, labels=labels, output_hidden_states=True
        )

    @staticmethod
    def _split(embeddings: Tensor, counts: Tensor, offset: Optional[Tensor] = None) -> List[Tensor]:
        """The gathered [SEG] embeddings split per row (``counts`` [SEG] each), or per image
        when ``offset`` groups the rows."""
        seg_offset = torch.cat([torch.zeros(1, dtype=torch.long, device=counts.device), counts.cumsum(-1)])
        if offset is not None:
            seg_offset = seg_offset[offset]
        return [embeddings[seg_offset[i] : seg_offset[i + 1]] for i in range(len(seg_offset) - 1)]

    def _losses(self, output: CausalLMOutputWithPast, pred_masks: List[Tensor], masks_list: List[Tensor]) -> Dict[str, Any]:
        """LISA's loss: weighted CE of the LLM plus weighted BCE and Dice over all masks."""
        ce_loss = output.loss * self.ce_loss_weight
        bce, dice, _ = mask_losses(pred_masks, masks_list)
        mask_loss = self.bce_loss_weight * bce + self.dice_loss_weight * dice
        return {"loss": ce_loss + mask_loss, "ce_loss": ce_loss, "mask_loss": mask_loss, "pred_masks": pred_masks}
