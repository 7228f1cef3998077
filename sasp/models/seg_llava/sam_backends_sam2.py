"""The sam2 package's ``SAM2Base`` (facebookresearch/sam2) as SegLlava's SAM: the "sam2"
backend where transformers has no ``Sam2Model``, or ``sam_config["backend"] = "sam2-package"``.

``sam_config``: ``config_file`` (a config of the package, e.g.
"configs/sam2.1/sam2.1_hiera_l.yaml"), optional ``overrides`` (hydra overrides, e.g.
["++model.image_size=512"]) and ``checkpoint`` (a released ``.pt``). Conventions follow the
package's ``SAM2ImagePredictor``: ``SAM2Transforms`` (an S x S resize, ImageNet mean/std),
points (x / W * S, y / H * S), the image features of ``set_image`` (``forward_image``,
``_prepare_backbone_features``, ``no_mem_embed``), the prompt encoder's ``points`` / ``masks``
and the mask decoder's ``high_res_features``; masks resized straight to the original size.
"""
from __future__ import annotations

import functools
import math
from typing import Any, List, Mapping, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .sam_backends import Embeddings, SamBackend, SamPrompt

DEFAULT_CONFIG = "configs/sam2.1/sam2.1_hiera_l.yaml"


class Sam2PackageBackend(SamBackend):
    name = "sam2-package"
    frame = "square"
    parts = {"image_encoder": "image_encoder", "prompt_encoder": "sam_prompt_encoder", "mask_decoder": "sam_mask_decoder"}

    @staticmethod
    def _overrides(sam_config: Mapping[str, Any]) -> List[str]:
        return [str(o) for o in sam_config.get("overrides", ())]

    def build(self, sam_config: Mapping[str, Any]) -> nn.Module:
        from sam2.build_sam import build_sam2

        return build_sam2(
            sam_config.get("config_file", DEFAULT_CONFIG), sam_config.get("checkpoint"), device="cpu", mode="eval",
            hydra_overrides_extra=self._overrides(sam_config),
        )

    def input_size(self, sam: nn.Module) -> int:
        return int(sam.image_size)

    def prompt_width(self, sam: nn.Module) -> int:
        return int(sam.sam_prompt_embed_dim)

    def config_prompt_width(self, sam_config: Mapping[str, Any]) -> int:
        from hydra import compose

        cfg = compose(config_name=sam_config.get("config_file", DEFAULT_CONFIG), overrides=self._overrides(sam_config))
        return int(cfg.model.image_encoder.neck.d_model)  # SAM2Base: the prompt width is the neck's

    def mask_input_size(self, sam: nn.Module) -> int:
        return int(sam.sam_prompt_encoder.mask_input_size[0])

    @staticmethod
    @functools.lru_cache(maxsize=8)
    def _transforms(size: int):
        from sam2.utils.transforms import SAM2Transforms

        return SAM2Transforms(resolution=size, mask_threshold=0.0)

    def preprocess(self, images: Sequence[np.ndarray], size: int) -> Tuple[Tensor, Tensor]:
        """``SAM2Transforms``: to [0, 1], resize to S x S, ImageNet mean/std."""
        pixels = self._transforms(int(size)).forward_batch([np.ascontiguousarray(img) for img in images])
        return pixels.float(), torch.full((len(images), 2), int(size), dtype=torch.long)

    def to_frame(self, points: Tensor, image_hw: Tensor, size: int) -> Tensor:
        """``SAM2Transforms.transform_coords(normalize=True)``: (x / W * S, y / H * S), float32."""
        if points.dim() != 3 or points.shape[-1] != 2:
            raise ValueError(f"points must have shape [M, K, 2], got {tuple(points.shape)}")
        hw = torch.as_tensor(image_hw).to(points.device, torch.float32).view(-1, 1, 2)
        return points.to(torch.float32) / hw.flip(-1) * float(size)

    def image_embeddings(self, sam: nn.Module, pixel_values: Tensor, grad: bool) -> Embeddings:
        """``SAM2ImagePredictor.set_image``'s features, batched: high-resolution levels first,
        the image embedding last."""
        x = pixel_values.to(sam.no_mem_embed.dtype)
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            _, feats, _, _ = sam._prepare_backbone_features(sam.forward_image(x))
            if sam.directly_add_no_mem_embed:
                feats[-1] = feats[-1] + sam.no_mem_embed
            out = []
            for f in feats:  # [HW, B, C] of a square map
                side = math.isqrt(f.shape[0])
                out.append(f.permute(1, 2, 0).reshape(x.shape[0], -1, side, side))
            return out

    def decode(self, sam: nn.Module, embeddings: Embeddings, index: int, prompt: SamPrompt, dtype: torch.dtype) -> Tensor:
        encoder = sam.sam_prompt_encoder
        mask = None if prompt.mask is None else prompt.mask.to(encoder.mask_downscaling[0].weight.dtype)
        points = None if prompt.coords is None else (prompt.coords, prompt.labels)
        sparse, dense = encoder(points=points, boxes=None, masks=mask)
        if sparse.shape[0] != prompt.n:
            sparse = sparse.expand(prompt.n, -1, -1)
        sparse = sparse.to(dtype)
        if prompt.text is not None:
            sparse = torch.cat([sparse, prompt.text[:, None].to(dtype)], 1)
        image = embeddings[-1][index : index + 1]
        high_res = [f[index : index + 1] for f in embeddings[:-1]] or None
        out = sam.sam_mask_decoder(
            image_embeddings=image,
            image_pe=encoder.get_dense_pe().to(image.dtype),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense.to(image.dtype),
            multimask_output=False,
            repeat_image=True,
            high_res_features=high_res,
        )
        return out[0]

    def postprocess(self, sam: nn.Module, low_res: Tensor, input_hw: Tuple[int, int], image_hw: Tuple[int, int]) -> Tensor:
        """``SAM2Transforms.postprocess_masks`` (no hole filling): straight to the original size."""
        return F.interpolate(low_res, image_hw, mode="bilinear", align_corners=False)[:, 0]

    def float32_buffers(self, sam: nn.Module) -> List[Tuple[nn.Module, str]]:
        return [(sam.sam_prompt_encoder.pe_layer, "positional_encoding_gaussian_matrix")]
