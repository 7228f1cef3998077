"""transformers' ``SamModel`` and ``Sam2Model`` as SegLlava's SAM (see ``sam_backends``).

Each follows its own model's conventions (``modeling_sam.py`` / ``modeling_sam2.py`` and their
processors in transformers): points go to the prompt encoder as ``input_points`` [n, 1, K, 2]
and ``input_labels`` [n, 1, K] in the input frame (``SamProcessor`` / ``Sam2Processor``
coordinates), the dense mask prompt as ``input_masks`` [n, 1, m, m]; the [SEG] embedding is one
more sparse token after the points. The n prompts of one image are decoded as a batch of n
(the image embedding repeated), so that each [SEG] keeps its own dense prompt. SAM 2 without
points gets one "not a point" point, as ``Sam2Model.forward`` does.
"""
from __future__ import annotations

import functools
from typing import Any, List, Mapping, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sasp.geometry import to_square_frame

from .sam_backends import Embeddings, SamBackend, SamPrompt


def _tokens(sparse, prompt: SamPrompt, dtype: torch.dtype):
    """Sparse tokens [n, 1, T, C] (or None): the prompt encoder's, then the [SEG] embedding."""
    if sparse is not None:
        sparse = sparse.to(dtype)
    if prompt.text is None:
        return sparse
    text = prompt.text[:, None, None].to(dtype)
    return text if sparse is None else torch.cat([sparse, text], 2)


def _points(prompt: SamPrompt):
    if prompt.coords is None:
        return None, None
    return prompt.coords[:, None], prompt.labels[:, None]


def _hf_images(images: Sequence[np.ndarray]) -> List[np.ndarray]:
    return [np.ascontiguousarray(img) for img in images]


class TransformersSamBackend(SamBackend):
    """transformers' ``SamModel`` (SAM 1 weights in the Hub layout, e.g. facebook/sam-vit-huge)."""

    name = "transformers"
    parts = {"image_encoder": "vision_encoder", "prompt_encoder": "prompt_encoder", "mask_decoder": "mask_decoder"}
    classes = ("SamConfig", "SamModel")
    """transformers' config and model class names of this backend."""

    def build_config(self, sam_config: Mapping[str, Any]):
        import transformers

        return getattr(transformers, self.classes[0])(**dict(sam_config.get("config") or {}))

    def build(self, sam_config: Mapping[str, Any]) -> nn.Module:
        import transformers

        return getattr(transformers, self.classes[1])(self.build_config(sam_config))

    def input_size(self, sam: nn.Module) -> int:
        return int(sam.prompt_encoder.input_image_size)

    def prompt_width(self, sam: nn.Module) -> int:
        return int(sam.prompt_encoder.hidden_size)

    def config_prompt_width(self, sam_config: Mapping[str, Any]) -> int:
        return int(self.build_config(sam_config).prompt_encoder_config.hidden_size)

    def mask_input_size(self, sam: nn.Module) -> int:
        return 4 * int(sam.prompt_encoder.image_embedding_size[0])

    @staticmethod
    @functools.lru_cache(maxsize=8)
    def _processor(size: int):
        from transformers import SamImageProcessor

        return SamImageProcessor(size={"longest_edge": size}, pad_size={"height": size, "width": size})

    def preprocess(self, images: Sequence[np.ndarray], size: int) -> Tuple[Tensor, Tensor]:
        """``SamImageProcessor``: resize the longest side to S, rescale, ImageNet mean/std, pad."""
        out = self._processor(int(size))(_hf_images(images), return_tensors="pt", input_data_format="channels_last")
        hw = torch.as_tensor(np.asarray(out["reshaped_input_sizes"]), dtype=torch.long).view(-1, 2)
        return out["pixel_values"].float(), hw

    def image_embeddings(self, sam: nn.Module, pixel_values: Tensor, grad: bool) -> Embeddings:
        x = pixel_values.to(sam.vision_encoder.patch_embed.projection.weight.dtype)
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            return sam.vision_encoder(x).last_hidden_state

    def decode(self, sam: nn.Module, embeddings: Embeddings, index: int, prompt: SamPrompt, dtype: torch.dtype) -> Tensor:
        encoder, n = sam.prompt_encoder, prompt.n
        mask = None if prompt.mask is None else prompt.mask.to(encoder.mask_embed.conv1.weight.dtype)
        points, labels = _points(prompt)
        sparse, dense = encoder(input_points=points, input_labels=labels, input_boxes=None, input_masks=mask)
        image = embeddings[index : index + 1]
        out = sam.mask_decoder(
            image_embeddings=image.expand(n, -1, -1, -1),
            image_positional_embeddings=sam.get_image_wide_positional_embeddings().to(image.dtype).expand(n, -1, -1, -1),
            sparse_prompt_embeddings=_tokens(sparse, prompt, dtype),
            dense_prompt_embeddings=dense.to(image.dtype).expand(n, -1, -1, -1),
            multimask_output=False,
        )
        return out[0][:, 0]


class TransformersSam2Backend(TransformersSamBackend):
    """transformers' ``Sam2Model`` (SAM 2 / 2.1 image models in the Hub layout)."""

    name = "sam2"
    frame = "square"
    classes = ("Sam2Config", "Sam2Model")

    def mask_input_size(self, sam: nn.Module) -> int:
        return int(sam.prompt_encoder.mask_input_size[0])

    @staticmethod
    @functools.lru_cache(maxsize=8)
    def _processor(size: int):
        import transformers

        cls = getattr(transformers, "Sam2ImageProcessor", None) or getattr(transformers, "Sam2ImageProcessorFast")
        return cls(size={"height": size, "width": size})

    def preprocess(self, images: Sequence[np.ndarray], size: int) -> Tuple[Tensor, Tensor]:
        """``Sam2ImageProcessor``: resize to S x S, rescale, ImageNet mean/std (no padding)."""
        out = self._processor(int(size))(_hf_images(images), return_tensors="pt", input_data_format="channels_last")
        return out["pixel_values"].float(), torch.full((len(images), 2), int(size), dtype=torch.long)

    def to_frame(self, points: Tensor, image_hw: Tensor, size: int) -> Tensor:
        """(x S / W, y S / H) in float32, as ``Sam2Processor`` scales its float32 points."""
        return to_square_frame(points, image_hw, size)

    def image_embeddings(self, sam: nn.Module, pixel_values: Tensor, grad: bool) -> Embeddings:
        """The feature pyramid of ``Sam2Model.get_image_embeddings`` (high-resolution levels
        first, the image embedding last), with gradients when asked."""
        x = pixel_values.to(sam.no_memory_embedding.dtype)
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            feats = list(sam.get_image_features(x, return_dict=True).fpn_hidden_states)
            feats[-1] = feats[-1] + sam.no_memory_embedding
            b = x.shape[0]
            return [f.permute(1, 2, 0).reshape(b, -1, *size) for f, size in zip(feats, sam.backbone_feature_sizes)]

    def decode(self, sam: nn.Module, embeddings: Embeddings, index: int, prompt: SamPrompt, dtype: torch.dtype) -> Tensor:
        encoder, n = sam.prompt_encoder, prompt.n
        image = embeddings[-1][index : index + 1]
        mask = None if prompt.mask is None else prompt.mask.to(encoder.mask_embed.conv1.weight.dtype)
        points, labels = _points(prompt)
        if points is None:  # Sam2Model.forward: no points and no boxes -> one "not a point"
            points = torch.zeros(n, 1, 1, 2, dtype=image.dtype, device=image.device)
            labels = -torch.ones(n, 1, 1, dtype=torch.int32, device=image.device)
        sparse, dense = encoder(input_points=points, input_labels=labels, input_boxes=None, input_masks=mask)
        out = sam.mask_decoder(
            image_embeddings=image.expand(n, -1, -1, -1),
            image_positional_embeddings=sam.get_image_wide_positional_embeddings().to(image.dtype).expand(n, -1, -1, -1),
            sparse_prompt_embeddings=_tokens(sparse, prompt, dtype),
            dense_prompt_embeddings=dense.to(image.dtype).expand(n, -1, -1, -1),
            multimask_output=False,
            high_resolution_features=[f[index : index + 1].expand(n, -1, -1, -1) for f in embeddings[:-1]],
        )
        return out[0][:, 0]

    def postprocess(self, sam: nn.Module, low_res: Tensor, input_hw: Tuple[int, int], image_hw: Tuple[int, int]) -> Tensor:
        """``Sam2ImageProcessor.post_process_masks``: straight to the original size (no padding)."""
        return F.interpolate(low_res, image_hw, mode="bilinear", align_corners=False)[:, 0]


def sam2_backend() -> SamBackend:
    """transformers' ``Sam2Model`` when the installed transformers has it, else the sam2
    package's ``SAM2Base``; an ImportError naming both when neither is installed."""
    import transformers

    if getattr(transformers, "Sam2Model", None) is not None:
        return TransformersSam2Backend()
    try:
        import sam2  # noqa: F401
    except ImportError:
        raise ImportError(
            "the 'sam2' SAM backend needs transformers' Sam2Model or the sam2 package: "
            "pip install -U \"transformers>=4.56\" (or pip install sam2)"
        ) from None
    from .sam_backends_sam2 import Sam2PackageBackend

    return Sam2PackageBackend()
