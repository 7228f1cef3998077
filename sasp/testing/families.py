"""Tiny LISA, GSVA, SESAME and READ models (random weights, CPU, milliseconds per pass).

Each family's ``model_forward`` (training and validation) and ``evaluate`` (generation) follow
the family's own code where a SasP spec looks: the [SEG] gather with the "image in front"
shift of N_p - 1, the projection applied to the full last-layer hidden states, SAM once per
image (LISA, SESAME) or once per conversation (GSVA: [REJ] gets no mask; ``reeval`` rewrites
[REJ] -> [SEG] in the caller's ``input_ids``), SESAME's ``None`` rows that skip SAM, and
READ's class that prompts SAM with points of its own.

Imports transformers and segment_anything.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from segment_anything.modeling import Sam
from torch import Tensor, nn
from transformers import LlamaConfig

from .llava import BOS, EOS, IMAGE_TOKEN_INDEX, PAD, REJ, SEG, VOCAB, SegMixin, TinyLlavaForCausalLM
from .sam import tiny_sam

__all__ = ["FAMILIES", "TinyGSVA", "TinyLISA", "TinyREAD", "TinySESAME", "allow_only", "build_tiny"]


class TinyLISA(SegMixin, TinyLlavaForCausalLM):
    """``LISAForCausalLM`` (dvlab-research/LISA, model/LISA.py)."""

    def __init__(self, config: LlamaConfig, sam: Sam, seg_token_idx: int = SEG):
        super().__init__(config, sam, seg_token_idx)
        self.Np = self.get_vision_tower().num_patches  # LISA hard-codes 256 (255 + 1)

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
        seg_token_mask = self._token_mask(input_ids, self.seg_token_idx, right=True)
        if inference:
            output = None
            output_hidden_states = [self._llm_one_image(images_clip, input_ids, attention_masks).hidden_states]
        else:
            output = self._llm_train(images_clip, offset, input_ids, attention_masks, labels)
            output_hidden_states = output.hidden_states
        last_hidden_state = self.model.text_hidden_fcs[0](output_hidden_states[-1])
        pred_embeddings = self._split(last_hidden_state[seg_token_mask], seg_token_mask.int().sum(-1), offset)
        pred_masks = [
            self._decode(pred_embeddings[i], image_embeddings[i], resize_list[i], label_list[i].shape)
            for i in range(len(pred_embeddings))
        ]
        if inference:
            return {"pred_masks": pred_masks, "gt_masks": masks_list}
        return self._losses(output, pred_masks, masks_list)

    def evaluate(
        self, images_clip, images, input_ids, resize_list, original_size_list, max_new_tokens=32, tokenizer=None
    ) -> Tuple[Tensor, List[Tensor]]:
        with torch.no_grad():
            output_ids, output_hidden_states = self._generate(images_clip, input_ids, max_new_tokens)
            seg_token_mask = self._token_mask(output_ids, self.seg_token_idx, right=False)
            last_hidden_state = self.model.text_hidden_fcs[0](output_hidden_states)
            pred_embeddings = self._split(last_hidden_state[seg_token_mask], seg_token_mask.int().sum(-1))
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

    def _predicted_ids(self, input_ids: Tensor, logits: Tensor) -> List[Tensor]:
        """Each row's ids with the image expanded and every [SEG]/[REJ] replaced by the
        prediction of the position before it (GSVA's ``output_ids``)."""
        output_ids = []
        for k in range(input_ids.shape[0]):
            pred = logits[k].argmax(dim=1)
            ids = input_ids[k].clone()
            img = int((ids == IMAGE_TOKEN_INDEX).nonzero().item())
            ids = torch.cat([ids[:img], torch.zeros(self.Np, device=ids.device, dtype=torch.long), ids[img + 1 :]])
            seg_at = (ids == self.seg_token_idx).nonzero(as_tuple=True)[0]
            rej_at = (ids == self.rej_token_idx).nonzero(as_tuple=True)[0]
            seg_val = torch.where(pred[seg_at - 1] != self.seg_token_idx, self.rej_token_idx, self.seg_token_idx)
            rej_val = torch.where(pred[rej_at - 1] != self.rej_token_idx, self.seg_token_idx, self.rej_token_idx)
            ids[seg_at], ids[rej_at] = seg_val, rej_val
            output_ids.append(ids)
        return output_ids

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
        image_embeddings = self.get_visual_embs(images)
        batch_size = image_embeddings.shape[0]
        assert batch_size == len(offset) - 1
        output_ids: List[Tensor] = []
        if inference:
            out = self._llm_one_image(images_clip, input_ids, attention_masks)
            hidden = out.hidden_states
            output_ids = self._predicted_ids(input_ids, out.logits)
            if reeval:
                input_ids[input_ids == self.rej_token_idx] = self.seg_token_idx  # in place, as GSVA does
                hidden = self._llm_one_image(images_clip, input_ids, attention_masks).hidden_states
            output_hidden_states = [hidden]
            output = None
        else:
            output = self._llm_train(images_clip, offset, input_ids, attention_masks, labels)
            output_hidden_states = output.hidden_states
        last_hidden_state = self.model.text_hidden_fcs[0](output_hidden_states[-1])
        seg_token_mask = self._token_mask(input_ids, self.seg_token_idx, right=True)
        rej_token_mask = self._token_mask(input_ids, self.rej_token_idx, right=True)
        mask_list_comp = []
        for row in range(len(input_ids)):
            both = seg_token_mask[row].long() * 2 + rej_token_mask[row].long()
            both = both[both.nonzero(as_tuple=True)[0]]
            mask_list_comp.append(both.eq(2).nonzero(as_tuple=True)[0])
        pred_embeddings = self._split(last_hidden_state[seg_token_mask], seg_token_mask.int().sum(-1))
        n_rows = len(pred_embeddings)
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
        return self._losses(output, per_image, masks_list)

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:  # GSVA evaluates through model_forward
        raise NotImplementedError


class TinySESAME(SegMixin, TinyLlavaForCausalLM):
    """``SESAMEForCausalLM`` (see-say-segment/sesame, model/SESAME.py); READ's released
    checkpoints load into this class."""

    hidden_states_in_train_mode = "last"

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

    def _points(self, counts: Sequence[int], sam_mask_shape_list: Any) -> Optional[List[Any]]:
        """Points of the model's own for image i's ``counts[i]`` [SEG]s (SESAME: none)."""
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
        seg_token_mask = self._token_mask(input_ids, self.seg_token_idx, right=True)
        if inference:
            output_hidden_states, output = self._llm_one_image(images_clip, input_ids, attention_masks).hidden_states, None
        else:
            output = self._llm_train(images_clip, offset, input_ids, attention_masks, labels)
            output_hidden_states = output.hidden_states
        pred_embeddings = self.model.text_hidden_fcs[0](output_hidden_states)[seg_token_mask]
        pred_embeddings = self._split(pred_embeddings, seg_token_mask.int().sum(-1), offset)
        points = self._points([e.shape[0] for e in pred_embeddings], sam_mask_shape_list)
        pred_masks = self.generate_pred_masks(pred_embeddings, self.get_visual_embs(images), sam_mask_shape_list, points)
        if inference:
            return {"pred_masks": pred_masks, "gt_masks": masks_list}
        return self._losses(output, pred_masks, masks_list)

    def evaluate(self, images_clip, images, input_ids, sam_mask_shape_list, max_new_tokens=32) -> Tuple[Tensor, List[Tensor], List[bool]]:
        with torch.inference_mode():
            output_ids, output_hidden_states = self._generate(images_clip, input_ids, max_new_tokens, do_sample=False)
            seg_token_mask = self._token_mask(output_ids, self.seg_token_idx, right=False)
            pred_embeddings = self.model.text_hidden_fcs[0](output_hidden_states)[seg_token_mask]
            per_row: List[Optional[Tensor]] = list(self._split(pred_embeddings, seg_token_mask.int().sum(-1)))
            presence = [e.shape[0] > 0 for e in per_row]
            counts = [e.shape[0] for e in per_row]
            per_row = [e if e.shape[0] else None for e in per_row]  # rows without [SEG] skip SAM
            points = self._points(counts, sam_mask_shape_list)
            pred_masks = self.generate_pred_masks(per_row, self.get_visual_embs(images), sam_mask_shape_list, points)
        return output_ids, pred_masks, presence


class TinyREAD(TinySESAME):
    """READ's own class (rui-qian/READ, model/READ.py): SESAME-structured, but it prompts SAM
    with similarity points it computes itself (here: one positive point at each image's
    centre, in SAM's frame), alongside the text embedding."""

    def similarity_map_to_points(self, sm: Tensor, shape: Any) -> Tuple[Tensor, Tensor]:
        h, w = int(shape[0]), int(shape[1])
        return torch.tensor([[w / 2.0, h / 2.0]]), torch.tensor([1])

    def _points(self, counts: Sequence[int], sam_mask_shape_list: Any) -> List[Tuple[Tensor, Tensor]]:
        out = []
        for n, shapes in zip(counts, sam_mask_shape_list):
            h, w = shapes[0]
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
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(FAMILIES)}")
    torch.manual_seed(seed)
    return _build_tiny(FAMILIES[family], sam if sam is not None else tiny_sam(), hidden, layers, clip_image, clip_patch)


def _build_tiny(cls: type, sam: nn.Module, hidden: int, layers: int, clip_image: int, clip_patch: int) -> nn.Module:
    """A tiny random ``cls`` (a family's double) around ``sam``, in eval mode; the caller seeds."""
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
    model = cls(config, sam)
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


def allow_only(model: nn.Module, tokens: Sequence[int]) -> None:
    """Make random-weight generation emit only ``tokens`` (suppress every other id)."""
    keep = set(int(t) for t in tokens)
    model.generation_config.suppress_tokens = [t for t in range(model.config.vocab_size) if t not in keep]
    # transformers 4.x rebuilds a generation config that came from the model config on every
    # generate() call, which would drop the suppression
    model.generation_config._from_model_config = False
