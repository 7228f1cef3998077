"""SAM backends of SegLlava behind one small interface, chosen by ``sam_config["backend"]``.

- ``"segment_anything"`` (default): segment_anything's ``Sam`` (``sam.build_sam``).
- ``"transformers"``: transformers' ``SamModel`` (``sam_config["config"]``: ``SamConfig``'s
  fields; released weights load with ``SamModel.from_pretrained``).
- ``"sam2"``: transformers' ``Sam2Model`` (``sam_config["config"]``: ``Sam2Config``'s fields)
  when the installed transformers has it, else the sam2 package's ``SAM2Base``
  (``"sam2-package"``, ``sam_backends_sam2``: ``sam_config["config_file"]``, which also
  selects the package when both are installed).

A backend answers, for its SAM module: the square input side, the prompt width, the mask
input side; the preprocessing of images into its input (and the size each image occupies
there); the image embeddings; the prompt call; the mask post-processing. Coordinates:

=====================  ===========================================  ===========================
backend                image in the input frame                      point (x, y) of an H x W image
=====================  ===========================================  ===========================
segment_anything       ResizeLongestSide(S), zero padding right/bottom  (x new_w / W, y new_h / H)
transformers (SAM)     the same (``SamProcessor``)                   the same
sam2 (SAM 2)           resized to S x S (``Sam2Processor``,          (x S / W, y S / H)
                       the package's ``SAM2Transforms``)
=====================  ===========================================  ===========================

with (new_h, new_w) = (int(H s + 0.5), int(W s + 0.5)), s = S / max(H, W). Labels are SAM's
everywhere: 1 positive, 0 negative, -1 "not a point" (padding). The [SEG] embedding is one
more sparse token after the point tokens (segment_anything, whose stock prompt encoder has
no text input, as LISA's fork appends it; the same for the transformers models).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sasp.geometry import to_sam_frame

Embeddings = Union[Tensor, List[Tensor]]
"""A backend's image embeddings: [B, C, h, w], or SAM 2's feature pyramid (a list, each [B, ...])."""

BACKENDS = ("segment_anything", "transformers", "sam2", "sam2-package")


@dataclass
class SamPrompt:
    """What SAM gets for the n [SEG]s of one image (all on the model's device).

    Attributes:
        n: the number of prompts.
        coords: [n, K, 2] points in the backend's input frame, or None.
        labels: [n, K] int64 point labels, or None.
        text: [n, C] projected [SEG] embeddings, or None (not given to SAM).
        mask: [n, 1, m, m] dense mask prompts (m: ``mask_input_size``), or None.
    """

    n: int
    coords: Optional[Tensor] = None
    labels: Optional[Tensor] = None
    text: Optional[Tensor] = None
    mask: Optional[Tensor] = None


class SamBackend:
    """The interface; one subclass per backend. Methods take the SAM module built by ``build``."""

    name = ""
    frame = "resize_longest"  # sasp.ops.mask_prompt's frame: "resize_longest" or "square"
    parts = {"image_encoder": "image_encoder", "prompt_encoder": "prompt_encoder", "mask_decoder": "mask_decoder"}
    """The attribute names of SAM's three parts (what to freeze or train)."""

    def build(self, sam_config: Mapping[str, Any]) -> nn.Module:
        raise NotImplementedError

    def input_size(self, sam: nn.Module) -> int:
        """S: SAM's square input side (1024 for the released models)."""
        raise NotImplementedError

    def prompt_width(self, sam: nn.Module) -> int:
        raise NotImplementedError

    def config_prompt_width(self, sam_config: Mapping[str, Any]) -> int:
        """The prompt width a SAM built from ``sam_config`` will have (without building it)."""
        raise NotImplementedError

    def mask_input_size(self, sam: nn.Module) -> int:
        """The side of the mask prompt input (4 x the image-embedding side: 256)."""
        raise NotImplementedError

    def preprocess(self, images: Sequence[np.ndarray], size: int) -> Tuple[Tensor, Tensor]:
        """uint8 RGB images [H, W, 3] -> (pixel values [B, 3, S, S], each image's (h, w) in
        the input frame before padding [B, 2] int64)."""
        raise NotImplementedError

    def image_embeddings(self, sam: nn.Module, pixel_values: Tensor, grad: bool) -> Embeddings:
        raise NotImplementedError

    def to_frame(self, points: Tensor, image_hw: Tensor, size: int) -> Tensor:
        """Pixel points (x, y) [M, K, 2] of images (H, W) [M, 2] -> the input frame, float32."""
        return to_sam_frame(points, image_hw, size)

    def decode(self, sam: nn.Module, embeddings: Embeddings, index: int, prompt: SamPrompt, dtype: torch.dtype) -> Tensor:
        """Low-resolution mask logits [n, 1, h', w'] of image ``index`` for ``prompt``."""
        raise NotImplementedError

    def postprocess(self, sam: nn.Module, low_res: Tensor, input_hw: Tuple[int, int], image_hw: Tuple[int, int]) -> Tensor:
        """Low-resolution logits [n, 1, h', w'] -> logits [n, H, W] at the original size."""
        size = self.input_size(sam)
        x = F.interpolate(low_res, (size, size), mode="bilinear", align_corners=False)
        x = x[..., : input_hw[0], : input_hw[1]]
        return F.interpolate(x, image_hw, mode="bilinear", align_corners=False)[:, 0]

    def float32_buffers(self, sam: nn.Module) -> List[Tuple[nn.Module, str]]:
        """(module, attribute) tensors that stay float32 when the model moves to 16 bits."""
        return []

    def init_weights(self, sam: nn.Module, module: nn.Module) -> None:
        """Give ``module`` (inside ``sam``) the initial values SAM's own constructor gives."""


class SegmentAnythingBackend(SamBackend):
    """segment_anything's ``Sam``; the prompt encoder has no text input, so the [SEG]
    embedding is appended after its sparse output."""

    name = "segment_anything"

    def build(self, sam_config: Mapping[str, Any]) -> nn.Module:
        from .sam import build_sam

        return build_sam({k: v for k, v in sam_config.items() if k != "backend"})

    def input_size(self, sam: nn.Module) -> int:
        return int(max(sam.prompt_encoder.input_image_size))

    def prompt_width(self, sam: nn.Module) -> int:
        return int(sam.prompt_encoder.embed_dim)

    def config_prompt_width(self, sam_config: Mapping[str, Any]) -> int:
        if sam_config.get("variant", "vit_h") == "custom":
            return int(sam_config.get("prompt_embed_dim", 256))
        return 256  # every released SAM

    def mask_input_size(self, sam: nn.Module) -> int:
        return int(sam.prompt_encoder.mask_input_size[0])

    def preprocess(self, images: Sequence[np.ndarray], size: int) -> Tuple[Tensor, Tensor]:
        """ResizeLongestSide(S) (PIL, as ``SamPredictor``), (x - mean) / std, zero padding."""
        from segment_anything.utils.transforms import ResizeLongestSide

        from .sam import SAM_PIXEL_MEAN, SAM_PIXEL_STD

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

    def image_embeddings(self, sam: nn.Module, pixel_values: Tensor, grad: bool) -> Embeddings:
        encoder = sam.image_encoder
        x = pixel_values.to(next(encoder.parameters()).dtype)
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            return encoder(x)

    def decode(self, sam: nn.Module, embeddings: Embeddings, index: int, prompt: SamPrompt, dtype: torch.dtype) -> Tensor:
        encoder = sam.prompt_encoder
        mask = prompt.mask
        if mask is not None:
            mask = mask.to(encoder.mask_downscaling[0].weight.dtype)
        if prompt.coords is not None:
            sparse, dense = encoder(points=(prompt.coords, prompt.labels), boxes=None, masks=mask)
        else:
            sparse, dense = encoder(points=None, boxes=None, masks=mask)
            sparse = sparse.expand(prompt.n, -1, -1)
        sparse = sparse.to(dtype)
        if prompt.text is not None:
            sparse = torch.cat([sparse, prompt.text[:, None]], 1)
        low_res, _ = sam.mask_decoder(
            image_embeddings=embeddings[index : index + 1],
            image_pe=encoder.get_dense_pe().to(dtype),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense.to(dtype),
            multimask_output=False,
        )
        return low_res

    def postprocess(self, sam: nn.Module, low_res: Tensor, input_hw: Tuple[int, int], image_hw: Tuple[int, int]) -> Tensor:
        return sam.postprocess_masks(low_res, input_size=input_hw, original_size=image_hw)[:, 0]

    def float32_buffers(self, sam: nn.Module) -> List[Tuple[nn.Module, str]]:
        # stock SAM multiplies float32 point coordinates by this Gaussian matrix
        return [(sam.prompt_encoder.pe_layer, "positional_encoding_gaussian_matrix")]

    def init_weights(self, sam: nn.Module, module: nn.Module) -> None:
        from .sam import init_like_constructor

        init_like_constructor(module)


@functools.lru_cache(maxsize=None)
def _resolve(name: str) -> SamBackend:
    if name == "segment_anything":
        return SegmentAnythingBackend()
    if name not in BACKENDS:
        raise ValueError(f"unknown SAM backend {name!r}; expected one of {', '.join(BACKENDS)}")
    if name == "sam2-package":
        try:
            import sam2  # noqa: F401
        except ImportError:
            raise ImportError("the 'sam2-package' SAM backend needs the sam2 package: pip install sam2") from None
        from .sam_backends_sam2 import Sam2PackageBackend

        return Sam2PackageBackend()
    from . import sam_backends_hf

    if name == "transformers":
        return sam_backends_hf.TransformersSamBackend()
    return sam_backends_hf.sam2_backend()


def get_backend(sam_config: Union[None, str, Mapping[str, Any]]) -> SamBackend:
    """The backend of a SAM config dict (its "backend" key, default "segment_anything") or of
    a backend name.

    Raises:
        ValueError: an unknown backend name.
        ImportError: the backend's library is missing (the message says what to install).
    """
    if isinstance(sam_config, str):
        name = sam_config
    else:
        name = (sam_config or {}).get("backend", "segment_anything")
    if not isinstance(name, str):
        raise ValueError(f"sam_config['backend'] must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "sam2" and isinstance(sam_config, Mapping) and "config_file" in sam_config:
        name = "sam2-package"  # a config of the sam2 package
    return _resolve(name)
