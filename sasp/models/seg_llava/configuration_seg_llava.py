"""``SegLlavaConfig``: transformers' ``LlavaConfig`` plus the segmentation head and SasP."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Union

from transformers import LlavaConfig

from sasp.config import SasPConfig

SAM_PROMPTS = ("both", "points", "text")
GEOMETRIES = ("center_crop", "pad_square")


class InputError(ValueError):
    """A user input the model cannot take (empty prompt, too long, unreadable image ...)."""


def _sasp_dict(sasp: Union[None, SasPConfig, Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    if sasp is None:
        return None
    if isinstance(sasp, SasPConfig):
        return dataclasses.asdict(sasp)
    if isinstance(sasp, Mapping):
        return dataclasses.asdict(SasPConfig(**dict(sasp)))  # validates the fields
    raise ValueError(f"sasp must be a SasPConfig, a dict of its fields or None, got {type(sasp).__name__}")


class SegLlavaConfig(LlavaConfig):
    """``LlavaConfig`` plus the [SEG] head, SAM and SasP.

    Args:
        seg_token_id: id of the [SEG] token (set when the token is added).
        sam_config: ``sasp.models.seg_llava.sam.build_sam``'s dict ({"variant": "vit_h"}).
        out_dim: width of the projected [SEG] embedding (SAM's prompt width, 256).
        ce_loss_weight / bce_loss_weight / dice_loss_weight: LISA's 1.0 / 2.0 / 0.5.
        image_geometry: how the image processor maps the image onto the token grid:
            "center_crop" (CLIPImageProcessor) or "pad_square" (expand to square).
        train_sam_encoder: run SAM's image encoder with gradients (LISA: never).
        sasp: Similarity-as-Points settings (a ``SasPConfig`` or its fields as a dict), or
            None for the baseline (SAM prompted with the [SEG] embedding only). Its geometry
            and crop size are taken from ``image_geometry`` and the vision tower.
        sam_prompt: with SasP on, what SAM is prompted with: "both" (points and the [SEG]
            embedding), "points" (points only) or "text" (the [SEG] embedding only: points
            are computed but SAM never sees them, so outputs carry none).
    """

    model_type = "seg_llava"

    def __init__(
        self,
        seg_token_id: Optional[int] = None,
        sam_config: Optional[Mapping[str, Any]] = None,
        out_dim: int = 256,
        ce_loss_weight: float = 1.0,
        bce_loss_weight: float = 2.0,
        dice_loss_weight: float = 0.5,
        image_geometry: str = "center_crop",
        train_sam_encoder: bool = False,
        sasp: Union[None, SasPConfig, Mapping[str, Any]] = None,
        sam_prompt: str = "both",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if image_geometry not in GEOMETRIES:
            raise ValueError(f"image_geometry must be one of {GEOMETRIES}, got {image_geometry!r}")
        if sam_prompt not in SAM_PROMPTS:
            raise ValueError(f"sam_prompt must be one of {SAM_PROMPTS}, got {sam_prompt!r}")
        self.seg_token_id = seg_token_id
        self.sam_config = dict(sam_config or {"variant": "vit_h"})
        self.out_dim = int(out_dim)
        self.ce_loss_weight = float(ce_loss_weight)
        self.bce_loss_weight = float(bce_loss_weight)
        self.dice_loss_weight = float(dice_loss_weight)
        self.image_geometry = image_geometry
        self.train_sam_encoder = bool(train_sam_encoder)
        self.sasp = _sasp_dict(sasp)
        self.sam_prompt = sam_prompt
        if self.sasp is None and sam_prompt == "points":
            raise ValueError("sam_prompt='points' needs SasP: set sasp to a SasPConfig (e.g. sasp.READ_7B)")

    def sasp_config(self) -> Optional[SasPConfig]:
        """The effective ``SasPConfig`` (geometry and crop size of this model), or None when
        SasP is off."""
        if self.sasp is None:
            return None
        crop = getattr(self.vision_config, "image_size", None)
        cfg = SasPConfig(**self.sasp).replace(geometry=self.image_geometry)
        return cfg.replace(crop_size=int(crop)) if crop else cfg

    def with_sasp(self, sasp: Union[None, SasPConfig, Mapping[str, Any]], sam_prompt: Optional[str] = None) -> None:
        """Switch SasP (and optionally the prompt mode) in place, validated."""
        prompt = sam_prompt or self.sam_prompt
        if prompt not in SAM_PROMPTS:
            raise ValueError(f"sam_prompt must be one of {SAM_PROMPTS}, got {prompt!r}")
        value = _sasp_dict(sasp)
        if value is None and prompt == "points":
            raise ValueError("sam_prompt='points' needs SasP: set sasp to a SasPConfig (e.g. sasp.READ_7B)")
        self.sasp, self.sam_prompt = value, prompt
