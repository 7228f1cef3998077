"""SasP configuration: READ's settings as data, not constants edited in place."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, Tuple

Geometry = Literal["center_crop", "pad_square"]
SpatialPrompt = Literal["points", "mask", "points+mask"]
SPATIAL_PROMPTS = ("points", "mask", "points+mask")


@dataclass(frozen=True)
class SasPConfig:
    """Settings of Similarity-as-Points and Discrete-to-Continuous.

    Defaults are READ's released 7B setting (``READ_7B``).

    Attributes:
        num_points: K, the number of point prompts per <SEG> (fixed; short rows are padded
            with label -1).
        t_pos: cells of the normalised map with value >= t_pos are positive points (label 1).
        t_neg: cells with 0 <= value <= t_neg are negative points (label 0).
        down_sample: the token grid (side x side) is bilinearly resized to
            (side // down_sample) before selection.
        geometry: how the token grid covers the image. "center_crop": CLIP's "resize the
            shortest side, centre crop" (LISA, GSVA, SESAME, READ). "pad_square": LLaVA's
            expand-to-square, where the grid covers the image padded to a square.
        crop_size: CLIP's input resolution, the intermediate map size of DtoC (336).
        dtoc_radius: half-width r of the square window DtoC evaluates around each point.
            Pixels outside it have weight exp(-d^2) with d >= r + 1; for r = 4 their total
            effect on a refined point is below 2e-8 px (see ``sasp.ops.dtoc``).
        check_finite: raise a ValueError naming the row when a similarity is NaN or Inf
            (costs one host synchronisation per call).
        spatial_prompt: what SAM gets from the similarity map: "points" (READ's point
            prompts), "mask" (the map itself as SAM's dense mask prompt, UGround's idea:
            ``sasp.ops.similarity_mask_prompt``) or "points+mask" (both).
        mask_range: (lo, hi): the min-max normalised map m in [0, 1] becomes the mask prompt
            lo + (hi - lo) * m. SAM's mask input is its own previous low-resolution logits
            (0 = its decision boundary), so the default (-8, 8) puts the boundary at m = 0.5,
            midway between SasP's thresholds (m >= 0.8 -> logit >= 4.8, m <= 0.2 -> <= -4.8);
            everything outside the image (SAM's padding) gets lo, "background". (0, 1) is
            UGround's convention (the normalised map as it is).
    """

    num_points: int = 30
    t_pos: float = 0.8
    t_neg: float = 0.2
    down_sample: int = 2
    geometry: Geometry = "center_crop"
    crop_size: int = 336
    dtoc_radius: int = 4
    check_finite: bool = True
    spatial_prompt: SpatialPrompt = "points"
    mask_range: Tuple[float, float] = (-8.0, 8.0)

    def __post_init__(self) -> None:
        if self.num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {self.num_points}")
        if self.down_sample < 1:
            raise ValueError(f"down_sample must be >= 1, got {self.down_sample}")
        if not 0.0 <= self.t_neg <= 1.0 or not 0.0 <= self.t_pos <= 1.0:
            raise ValueError(f"thresholds must lie in [0, 1], got t_neg={self.t_neg}, t_pos={self.t_pos}")
        if self.t_neg >= self.t_pos:
            raise ValueError(f"t_neg must be below t_pos, got t_neg={self.t_neg}, t_pos={self.t_pos}")
        if self.geometry not in ("center_crop", "pad_square"):
            raise ValueError(f"geometry must be 'center_crop' or 'pad_square', got {self.geometry!r}")
        if self.crop_size < 1:
            raise ValueError(f"crop_size must be >= 1, got {self.crop_size}")
        if self.dtoc_radius < 0:
            raise ValueError(f"dtoc_radius must be >= 0, got {self.dtoc_radius}")
        if self.spatial_prompt not in SPATIAL_PROMPTS:
            raise ValueError(f"spatial_prompt must be one of {SPATIAL_PROMPTS}, got {self.spatial_prompt!r}")
        try:
            lo, hi = (float(v) for v in self.mask_range)
        except (TypeError, ValueError):
            raise ValueError(f"mask_range must be two numbers (lo, hi), got {self.mask_range!r}") from None
        if not lo < hi or not all(abs(v) < float("inf") for v in (lo, hi)):
            raise ValueError(f"mask_range must be finite with lo < hi, got {self.mask_range!r}")
        object.__setattr__(self, "mask_range", (lo, hi))  # a list read from JSON compares equal

    @property
    def uses_points(self) -> bool:
        """SAM gets SasP's point prompts."""
        return self.spatial_prompt != "mask"

    @property
    def uses_mask(self) -> bool:
        """SAM gets the similarity map as its dense mask prompt."""
        return self.spatial_prompt != "points"

    def replace(self, **changes) -> "SasPConfig":
        """A copy with some fields changed."""
        return replace(self, **changes)


READ_7B = SasPConfig(num_points=30, t_pos=0.8, t_neg=0.2, down_sample=2)
"""READ-LLaVA-v1.5-7B release (ReasonSeg val/test)."""

READ_13B = SasPConfig(num_points=60, t_pos=0.6, t_neg=0.2, down_sample=1)
"""READ-LLaVA-v1.5-13B release (ReasonSeg test)."""

READ_7B_MASK = READ_7B.replace(spatial_prompt="points+mask")
"""READ-7B's points plus the similarity map as SAM's dense mask prompt."""

MASK_ONLY = READ_7B.replace(spatial_prompt="mask")
"""The similarity map as SAM's dense mask prompt instead of points (UGround's prompt)."""

PRESETS = {"read-7b": READ_7B, "read-13b": READ_13B, "read-7b+mask": READ_7B_MASK, "mask": MASK_ONLY}
