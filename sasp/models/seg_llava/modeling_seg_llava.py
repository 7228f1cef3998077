"""``SegLlavaForCausalLM``: LISA's architecture on transformers' LLaVA and stock SAM, SasP native.

- The multimodal LLM is transformers' ``LlavaForConditionalGeneration`` (this class subclasses
  it, so LLaVA-1.5-style checkpoints load; see ``sasp.models.seg_llava.loading``).
- LISA's projection ``text_hidden_fcs[0]`` (Linear, ReLU, Linear, Dropout) maps the last-layer
  hidden state one position before each [SEG] to SAM's prompt width.
- ``visual_model`` is segment_anything's stock ``Sam`` by default, or transformers' ``SamModel``
  / ``Sam2Model`` (``sam_config["backend"]``, see ``sam_backends``). None of their prompt
  encoders has a text input, so the projected [SEG] embedding is appended after the sparse
  prompt (after the points), as LISA's fork does inside its encoder.
- With ``config.sasp`` set, the similarity of every [SEG] with its image's patch tokens becomes
  SasP points (``sasp.similarity_as_points``), mapped to SAM's frame and passed to the prompt
  encoder, and/or SAM's dense mask prompt (``sasp.similarity_mask_prompt``, with
  ``spatial_prompt`` "mask" or "points+mask"); gradients reach the LLM through both. Outputs
  carry, per [SEG], the similarity row and the points, labels and mask prompt SAM received.

Token layout: transformers' ``LlavaProcessor`` expands ``<image>`` into N_p consecutive copies
of ``config.image_token_id``, so the patch hidden states sit where ``input_ids`` holds it.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import LlavaForConditionalGeneration

from sasp.ops import similarity_as_points, similarity_mask_prompt
from sasp.similarity import similarity

from .configuration_seg_llava import InputError, SegLlavaConfig
from .losses import mask_losses
from .outputs import SegLlavaGeneration, SegLlavaOutput, SegPrompts
from .sam import init_like_constructor
from .sam_backends import SamPrompt, get_backend


def hw_tensor(x: Any, rows: int, name: str) -> Tensor:
    """Validated per-row (H, W) sizes: CPU int64 [rows, 2]."""
    t = torch.as_tensor(x).detach().to("cpu", torch.long)
    if t.dim() == 1 and t.numel() == 2:
        t = t.expand(rows, 2)
    if t.shape != (rows, 2):
        raise InputError(f"{name} must be [{rows}, 2] (H, W per row), got {tuple(t.shape)}")
    return t


class SegLlavaForCausalLM(LlavaForConditionalGeneration):
    """LISA's architecture on transformers' LLaVA and segment_anything's stock SAM.

    Entry points: ``forward`` (training, with ``sam_pixel_values``; plain LLaVA without) and
    ``segment`` (inference: generate, then a mask per [SEG]). ``config.sasp`` switches SasP.
    """

    config_class = SegLlavaConfig

    def __init__(self, config: SegLlavaConfig):
        super().__init__(config)
        self.sam_backend = get_backend(config.sam_config)
        self.visual_model = self.sam_backend.build(config.sam_config)
        width = self.sam_backend.prompt_width(self.visual_model)
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
            raise ValueError("config.seg_token_id is not set; add the [SEG] token first (sasp.models.seg_llava.loading.from_llava)")
        return int(self.config.seg_token_id)

    @property
    def grid_hw(self) -> Tuple[int, int]:
        """(rows, cols) of the patch-token grid."""
        vc = self.config.vision_config
        if self.config.vision_feature_select_strategy != "default":
            raise ValueError("SasP needs vision_feature_select_strategy='default' (patch tokens only, no CLS)")
        side = vc.image_size // vc.patch_size
        return side, side

    @property
    def num_patches(self) -> int:
        """N_p: patch tokens per image (CLS dropped by the "default" feature strategy)."""
        rows, cols = self.grid_hw
        return rows * cols

    @property
    def max_context(self) -> int:
        return int(self.config.text_config.max_position_embeddings)

    def _init_weights(self, module: nn.Module) -> None:
        """transformers' initialisation for the LLaVA modules; SAM and the projection get what
        their own constructors give, so that a model converted from LLaVA starts like LISA's."""
        own = self.__dict__.get("_modules", {})
        if "_own_ids" not in self.__dict__ and "visual_model" in own and "text_hidden_fcs" in own:
            self.__dict__["_own_ids"] = {id(m) for key in ("visual_model", "text_hidden_fcs") for m in own[key].modules()}
        if id(module) in self.__dict__.get("_own_ids", ()):
            if "sam_backend" in self.__dict__ and any(m is module for m in own["visual_model"].modules()):
                self.sam_backend.init_weights(own["visual_model"], module)
            else:
                init_like_constructor(module)
            return
        super()._init_weights(module)

    def _apply(self, fn, recurse: bool = True):
        # Stock SAM's random-frequency position encoding multiplies float32 coordinates by its
        # Gaussian matrix, so that buffer stays float32 when the model moves to fp16/bf16.
        if "visual_model" not in self._modules:  # still inside __init__
            return super()._apply(fn, recurse)
        kept = [(m, name, getattr(m, name)) for m, name in self.sam_backend.float32_buffers(self.visual_model)]
        out = super()._apply(fn, recurse)
        for m, name, old in kept:
            moved = getattr(m, name)
            if moved.dtype != torch.float32 and old.dtype == torch.float32:
                setattr(m, name, old.to(moved.device))
        return out

    # -- SAM side ------------------------------------------------------------------------

    def get_visual_embs(self, sam_pixel_values: Tensor):
        """SAM image embeddings [B, C, h, w] (SAM 2: its feature pyramid, a list); without
        gradient unless ``config.train_sam_encoder``."""
        return self.sam_backend.image_embeddings(self.visual_model, sam_pixel_values, self.config.train_sam_encoder)

    def seg_positions(self, tokens: Tensor) -> Tensor:
        """[B, T] bool: the positions whose hidden state predicts a [SEG] (the <SEG> features)."""
        seg = torch.zeros_like(tokens, dtype=torch.bool)
        seg[:, :-1] = tokens[:, 1:] == self.seg_token_idx
        return seg

    def seg_prompts(self, tokens: Tensor, hidden_states: Tensor, image_hw: Tensor, seg: Optional[Tensor] = None) -> SegPrompts:
        """The similarity of every [SEG] and, with SasP on, the points SAM gets.

        Args:
            tokens (Tensor): [B, T] token ids aligned with ``hidden_states`` [B, T, D].
            image_hw (Tensor): [B, 2] original (H, W) per row.
            seg (Tensor): ``seg_positions(tokens)`` when the caller has it already.
        """
        seg = self.seg_positions(tokens) if seg is None else seg
        rows, pos = seg.nonzero(as_tuple=True)
        n_p = self.num_patches
        is_img = tokens == int(self.config.image_token_id)
        first = is_img.int().argmax(1)
        count = is_img.sum(1)
        bad = (count[rows] != n_p) | (is_img[rows, (first[rows] + n_p - 1).clamp(max=tokens.shape[1] - 1)] == 0)
        if bad.any():
            r = int(rows[bad][0])
            raise InputError(f"row {r} has a [SEG] but not {n_p} consecutive image tokens (it has {int(count[r])})")
        idx = first[rows, None] + torch.arange(n_p, device=tokens.device)
        sim = similarity(hidden_states[rows[:, None], idx], hidden_states[rows, pos])
        refined = labels = mask = None
        cfg = self.config.sasp_config()
        if cfg is not None and self.config.sam_prompt != "text" and rows.numel():
            hw = image_hw[rows.cpu()]
            if cfg.uses_points:
                refined, labels, _ = similarity_as_points(sim, hw, cfg, self.grid_hw)
            if cfg.uses_mask:
                sam, backend = self.visual_model, self.sam_backend
                size, low = backend.input_size(sam), backend.mask_input_size(sam)
                mask = similarity_mask_prompt(sim, hw, cfg, self.grid_hw, size, low, backend.frame)
        # all fields at construction: a ModelOutput's keys (what ** unpacks) are fixed there
        return SegPrompts(seg_rows=rows.cpu(), similarity=sim, points=refined, labels=labels, mask_prompts=mask)

    def decode_masks(
        self, tokens: Tensor, hidden_states: Tensor, image_embeddings: Tensor, image_hw: Tensor, sam_input_hw: Tensor
    ) -> Tuple[List[Tensor], Tensor, SegPrompts]:
        """Mask logits for every [SEG]: per row [n_SEG, H, W] at the original image size.

        Args:
            tokens (Tensor): [B, T] token ids, aligned with ``hidden_states`` [B, T, D].
            image_embeddings (Tensor): [B, C, h, w] SAM image embeddings (``get_visual_embs``).
            image_hw (Tensor): [B, 2] original (H, W); sam_input_hw: [B, 2] size in SAM's input
                before padding (``SegLlavaProcessor``).

        Returns:
            (mask logits per row, [SEG] count per row [B], the prompts SAM received).
        """
        if tokens.shape != hidden_states.shape[:2]:
            raise ValueError(f"tokens {tuple(tokens.shape)} and hidden states {tuple(hidden_states.shape[:2])} must align")
        seg = self.seg_positions(tokens)
        prompts = self.seg_prompts(tokens, hidden_states, image_hw, seg)
        projected = self.text_hidden_fcs[0](hidden_states)  # full [B, T, D], as LISA
        embeds = projected[seg]  # [M, C], row-major
        counts = seg.sum(1).cpu()
        sam, backend = self.visual_model, self.sam_backend
        use_text = self.config.sam_prompt != "points" or (prompts.points is None and prompts.mask_prompts is None)
        coords = None
        if prompts.points is not None:
            coords = backend.to_frame(prompts.points, image_hw[prompts.seg_rows], backend.input_size(sam))
        dev, sam_device = embeds.device, next(sam.parameters()).device
        masks: List[Tensor] = []
        start = 0
        for b, n in enumerate(counts.tolist()):
            h, w = (int(v) for v in image_hw[b])
            if n == 0:
                masks.append(torch.zeros((0, h, w), device=sam_device))
                continue
            part = slice(start, start + n)
            prompt = SamPrompt(
                n=n,
                coords=None if coords is None else coords[part].to(dev),
                labels=None if coords is None else prompts.labels[part].to(dev),
                text=embeds[part] if use_text else None,
                mask=None if prompts.mask_prompts is None else prompts.mask_prompts[part].to(dev),
            )
            start += n
            low_res = backend.decode(sam, image_embeddings, b, prompt, embeds.dtype)
            input_hw = tuple(int(v) for v in sam_input_hw[b])
            masks.append(backend.postprocess(sam, low_res, input_hw, (h, w)))
        return masks, counts, prompts

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
        logits_to_keep: Union[int, Tensor, None] = 0,
        **kwargs: Any,
    ):
        """Training forward (LISA's ``model_forward``), or plain LLaVA when ``sam_pixel_values``
        is None (what ``generate`` calls).

        Args:
            input_ids (Tensor): [B, T] with N_p image tokens per row (``SegLlavaProcessor``).
            pixel_values (Tensor): [B, 3, S, S] CLIP input.
            labels (Tensor): [B, T] LM targets (-100 = ignored) for the CE loss.
            sam_pixel_values (Tensor): [B, 3, S_sam, S_sam] SAM input.
            image_hw (Tensor): [B, 2] original (H, W); sam_input_hw: [B, 2] resized size.
            gt_masks (list[Tensor]): per row [n_SEG, H, W] target masks for BCE + Dice.
            logits_to_keep (int | Tensor): LLaVA's: logits for the last n positions only (0 or
                None: all); named here so that ``generate`` computes the last position only.

        Returns:
            SegLlavaOutput with ``loss = ce_w * CE + bce_w * BCE + dice_w * Dice``.
        """
        kwargs["logits_to_keep"] = 0 if logits_to_keep is None else logits_to_keep
        if sam_pixel_values is None:
            return super().forward(
                input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask, labels=labels, **kwargs
            )
        rows = input_ids.shape[0]
        image_hw = hw_tensor(image_hw, rows, "image_hw")
        sam_input_hw = hw_tensor(sam_input_hw, rows, "sam_input_hw")
        kwargs["output_hidden_states"] = True
        out = super().forward(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask, labels=labels, **kwargs)
        image_embeddings = self.get_visual_embs(sam_pixel_values)
        pred_masks, _, prompts = self.decode_masks(input_ids, out.hidden_states[-1], image_embeddings, image_hw, sam_input_hw)
        cfg = self.config
        ce = out.loss * cfg.ce_loss_weight if out.loss is not None else None
        bce = dice = mask_loss = None
        if gt_masks is not None:
            if len(gt_masks) != rows:
                raise InputError(f"gt_masks has {len(gt_masks)} entries for {rows} rows")
            try:
                bce, dice, _ = mask_losses(pred_masks, gt_masks)
            except ValueError as err:
                raise InputError(str(err)) from None
            bce, dice = cfg.bce_loss_weight * bce, cfg.dice_loss_weight * dice
            mask_loss = bce + dice
        parts = [p for p in (ce, mask_loss) if p is not None]
        loss = sum(parts[1:], parts[0]) if parts else None
        return SegLlavaOutput(
            loss=loss, ce_loss=ce, mask_bce_loss=bce, mask_dice_loss=dice, mask_loss=mask_loss,
            logits=out.logits, pred_masks=pred_masks, **prompts,
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
        image_hw = hw_tensor(image_hw, rows, "image_hw")
        sam_input_hw = hw_tensor(sam_input_hw, rows, "sam_input_hw")
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
                input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                max_new_tokens=max_new_tokens, suppress_tokens=suppress, output_hidden_states=True,
                return_dict_in_generate=True, **generate_kwargs,
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
        logits, counts, prompts = self.decode_masks(sequences, hidden, image_embeddings, image_hw, sam_input_hw)
        return SegLlavaGeneration(
            sequences=sequences, masks=[m > mask_threshold for m in logits], mask_logits=logits, seg_counts=counts,
            has_object=counts > 0, hidden_states=hidden if output_hidden_states else None, **prompts,
        )

    @classmethod
    def from_llava(cls, llava: Any, **kwargs: Any):
        """A LLaVA-1.5 checkpoint (folder, hub id or loaded model) as this model: see
        ``sasp.models.seg_llava.loading.from_llava``."""
        from .loading import from_llava

        return from_llava(llava, model_class=cls, **kwargs)


def _register() -> None:
    """``AutoConfig`` / ``AutoModelForImageTextToText`` know ``seg_llava``; ``from_pretrained``
    reads LLaVA checkpoints saved in the legacy key layout (where transformers supports it)."""
    from transformers import AutoConfig

    AutoConfig.register(SegLlavaConfig.model_type, SegLlavaConfig, exist_ok=True)
    try:
        from transformers import AutoModelForImageTextToText

        AutoModelForImageTextToText.register(SegLlavaConfig, SegLlavaForCausalLM, exist_ok=True)
    except ImportError:  # older transformers: no image-text-to-text auto class
        pass
    try:
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping

        mapping = get_checkpoint_conversion_mapping("llava")
        if mapping:
            register_checkpoint_conversion_mapping(SegLlavaForCausalLM.__name__, mapping, overwrite=True)
    except Exception:  # noqa: BLE001 - transformers without conversion mappings load the new layout only
        pass


_register()
