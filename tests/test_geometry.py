"""to_sam_frame, similarity and the import surface."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from sasp import similarity, to_sam_frame


@pytest.mark.parametrize("hw", [(480, 640), (1080, 1920), (1, 1), (7, 9), (4000, 40), (333, 1024)])
def test_to_sam_frame_matches_segment_anything(hw):
    from segment_anything.utils.transforms import ResizeLongestSide

    pts = torch.rand(3, 30, 2) * torch.tensor([hw[1], hw[0]])
    ours = to_sam_frame(pts, [hw] * 3)
    theirs = ResizeLongestSide(1024).apply_coords_torch(pts, hw)
    assert torch.equal(ours, theirs.float())
    # SamPredictor's numpy path computes in float64: equal up to float32 rounding
    np.testing.assert_allclose(ours.numpy(), ResizeLongestSide(1024).apply_coords(pts.numpy(), hw), rtol=2e-7)


def test_to_sam_frame_is_differentiable():
    pts = torch.rand(2, 5, 2, requires_grad=True)
    to_sam_frame(pts, [(100, 50), (50, 100)]).sum().backward()
    assert (pts.grad > 0).all()


def test_similarity_float32_accumulation():
    tokens = torch.randn(3, 576, 512).bfloat16()
    seg = torch.randn(3, 512).bfloat16()
    exact = torch.einsum("mnd,md->mn", tokens.double(), seg.double())
    got = similarity(tokens, seg)
    assert got.dtype == torch.float32
    assert (got.double() - exact).abs().max() < 1e-3
    shared = similarity(tokens[0], seg)
    assert torch.allclose(shared[0], got[0], rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match=r"\[M, N_p, D\]"):
        similarity(torch.randn(3, 10, 8), torch.randn(3, 9))


def test_import_sasp_is_light():
    code = (
        "import sys, sasp\n"
        "heavy = [m for m in ('transformers', 'segment_anything', 'triton', 'matplotlib', 'peft') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
