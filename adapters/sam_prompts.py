"""How a pipeline's SAM takes prompts: keyword names, shapes and coordinate frame.

``SegPipelineSpec.sam_backend`` names one of ``SAM_BACKENDS`` (or is a ``SamPromptStyle`` of
your own); the prompt hook injects SasP's points and mask prompt through it.

=================  ==============================  ================  =======================
backend            points (n prompts, K points)    mask prompt       frame of an H x W image
=================  ==============================  ================  =======================
segment_anything   ``points=(coords [n, K, 2],     ``masks=``        ResizeLongestSide(S) +
                   labels [n, K])``                [n, 1, m, m]      padding: (x new_w / W,
                                                                     y new_h / H)
transformers       ``input_points=[n, 1, K, 2]``,  ``input_masks=``  the same (``SamProcessor``)
                   ``input_labels=[n, 1, K]``      [n, 1, m, m]
sam2               transformers' ``Sam2Model``:    as above          S x S resize: (x S / W,
                   as transformers; the sam2                         y S / H) (``Sam2Processor``)
                   package: as segment_anything
=================  ==============================  ================  =======================

S is the prompt encoder's input side (``input_image_size``), m its mask input side (4 x the
image-embedding side). Labels need no mapping: 1 positive, 0 negative and -1 "not a point"
mean the same to all of them (transformers adds -10, "ignore", which SasP never emits).

Imports torch and sasp's core only.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

from torch import Tensor, nn

from sasp.geometry import ImageSizes, to_sam_frame, to_square_frame

SAM_BACKENDS = ("segment_anything", "transformers", "sam2")

__all__ = ["SAM_BACKENDS", "SamPromptStyle", "prompt_style"]


@dataclass(frozen=True)
class SamPromptStyle:
    """One prompt encoder's conventions.

    Attributes:
        name: for messages.
        points: keyword of the points.
        labels: keyword of the labels; None: ``points=(coords, labels)`` (segment_anything).
        masks: keyword of the dense mask prompt.
        boxes: keyword of the box prompt (set to None when absent).
        point_batch: transformers' layout: points [n, 1, K, 2], labels [n, 1, K].
        frame: "resize_longest" (SAM) or "square" (SAM 2), see the module docstring.
    """

    name: str
    points: str = "points"
    labels: Optional[str] = None
    masks: str = "masks"
    boxes: str = "boxes"
    point_batch: bool = False
    frame: str = "resize_longest"

    def __post_init__(self) -> None:
        if self.frame not in ("resize_longest", "square"):
            raise ValueError(f"frame must be 'resize_longest' or 'square', got {self.frame!r}")

    def input_size(self, encoder: nn.Module) -> int:
        """S: the square input side the encoder normalises coordinates by."""
        size = encoder.input_image_size
        return int(max(size)) if isinstance(size, (tuple, list)) else int(size)

    def mask_size(self, encoder: nn.Module) -> int:
        """m: the side of the encoder's mask input (4 x its image-embedding side)."""
        size = getattr(encoder, "mask_input_size", None)
        if size is None:
            return 4 * int(encoder.image_embedding_size[0])
        return int(size[0]) if isinstance(size, (tuple, list)) else int(size)

    def to_frame(self, points: Tensor, image_hw: ImageSizes, size: int) -> Tensor:
        """Pixel points (x, y) [M, K, 2] -> the encoder's input frame, float32."""
        if self.frame == "square":
            return to_square_frame(points, image_hw, size)
        return to_sam_frame(points, image_hw, size)

    def has_points(self, arguments: Dict[str, Any]) -> bool:
        return arguments.get(self.points) is not None

    def inject(
        self,
        arguments: Dict[str, Any],
        coords: Optional[Tensor],
        labels: Optional[Tensor],
        mask: Optional[Tensor],
        device: Any,
        dtype: Any,
    ) -> Dict[str, Any]:
        """``arguments`` (a prompt-encoder call's, bound) with the points [n, K, 2] / labels
        [n, K] and the mask prompt [n, 1, m, m] set (each when given); absent prompts None."""
        out = dict(arguments)
        if coords is not None:
            c, l = coords.to(device), labels.to(device)
            if self.point_batch:
                c, l = c[:, None], l[:, None]
            if self.labels is None:
                out[self.points] = (c, l)
            else:
                out[self.points], out[self.labels] = c, l
        if mask is not None and out.get(self.masks) is None:
            out[self.masks] = mask.to(device, dtype)
        for key in (self.points, self.labels, self.masks, self.boxes):
            if key is not None:
                out.setdefault(key, None)
        return out


_SEGMENT_ANYTHING = SamPromptStyle("segment_anything")
_TRANSFORMERS = SamPromptStyle(
    "transformers", points="input_points", labels="input_labels", masks="input_masks", boxes="input_boxes", point_batch=True
)


def prompt_style(backend: Union[str, SamPromptStyle], encoder: Optional[nn.Module] = None) -> SamPromptStyle:
    """The ``SamPromptStyle`` of a backend name (``SAM_BACKENDS``), or ``backend`` itself.

    "sam2" reads the keywords from ``encoder.forward``: transformers' ``Sam2PromptEncoder``
    takes ``input_points``, the sam2 package's ``PromptEncoder`` takes ``points``.
    """
    if isinstance(backend, SamPromptStyle):
        return backend
    if backend == "segment_anything":
        return _SEGMENT_ANYTHING
    if backend == "transformers":
        return _TRANSFORMERS
    if backend == "sam2":
        takes = inspect.signature(encoder.forward).parameters if encoder is not None else {}
        base = _TRANSFORMERS if "input_points" in takes else _SEGMENT_ANYTHING
        return SamPromptStyle("sam2", base.points, base.labels, base.masks, base.boxes, base.point_batch, frame="square")
    raise ValueError(f"sam_backend must be one of {SAM_BACKENDS} or a SamPromptStyle, got {backend!r}")
