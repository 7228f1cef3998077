"""Similarity between the image-patch tokens and a <SEG> hidden state."""
from __future__ import annotations

from torch import Tensor


def similarity(image_tokens: Tensor, seg_hidden: Tensor) -> Tensor:
    """Dot products s[m, n] = <image_tokens[m, n], seg_hidden[m]>, accumulated in float32.

    READ writes this in CLIP-Surgery form; with a single text feature that form reduces
    exactly to the plain dot product computed here.

    Args:
        image_tokens (Tensor): [M, N_p, D] patch-token hidden states of the <SEG>'s image
            (or [N_p, D], shared by every <SEG>).
        seg_hidden (Tensor): [M, D] hidden states one position before each [SEG].

    Returns:
        Tensor: [M, N_p] float32; differentiable with respect to both inputs.
    """
    if seg_hidden.dim() != 2:
        raise ValueError(f"seg_hidden must be [M, D], got {tuple(seg_hidden.shape)}")
    if image_tokens.dim() == 2 and image_tokens.shape[-1] == seg_hidden.shape[-1]:
        return seg_hidden.float() @ image_tokens.float().T  # one image shared by every <SEG>
    if image_tokens.dim() != 3 or image_tokens.shape[0] != seg_hidden.shape[0] or image_tokens.shape[-1] != seg_hidden.shape[-1]:
        raise ValueError(
            f"image_tokens {tuple(image_tokens.shape)} and seg_hidden {tuple(seg_hidden.shape)} "
            "must be [M, N_p, D] and [M, D]"
        )
    # [M, N_p, D] @ [M, D, 1] -> [M, N_p, 1]: one batched matrix-vector product
    return (image_tokens.float() @ seg_hidden.float()[:, :, None])[..., 0]
