"""similarity_mask_prompt against similarity_mask_prompt_ref (full H x W maps, per row): values
in float32 and float64 on many shapes (odd image sizes, both geometries, both SAM frames,
non-square grids), gradients, and hand-checkable properties of the map."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sasp import READ_7B, SasPConfig, similarity_mask_prompt, similarity_mask_prompt_ref

# (image sizes, grid, crop, sam_size, mask_size): odd sizes, thin images, non-square grids,
# images smaller and larger than SAM's frame, sizes shared between rows
SHAPES = [
    ([(7, 9)], (4, 4), 16, 32, 8),
    ([(37, 91), (120, 33), (37, 91)], (3, 4), 60, 64, 16),
    ([(1, 1), (13, 500)], (5, 5), 20, 64, 16),
    ([(300, 41), (41, 300), (64, 64)], (6, 4), 48, 96, 24),
    ([(1080, 1920)], (24, 24), 336, 1024, 256),
    ([(333, 257)], (12, 12), 168, 256, 64),
]
GEOMETRIES = ["center_crop", "pad_square"]
FRAMES = ["resize_longest", "square"]


def _case(sizes, grid, crop, geometry):
    sim = torch.randn(len(sizes), grid[0] * grid[1], dtype=torch.float64) * 3 + 1
    return sim, sizes, READ_7B.replace(crop_size=crop, geometry=geometry)


@pytest.mark.parametrize("frame", FRAMES)
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("sizes,grid,crop,sam,mask", SHAPES)
def test_matches_reference(sizes, grid, crop, sam, mask, geometry, frame):
    sim, hw, cfg = _case(sizes, grid, crop, geometry)
    ref64 = similarity_mask_prompt_ref(sim, hw, cfg, grid, sam, mask, frame)
    out64 = similarity_mask_prompt(sim, hw, cfg, grid, sam, mask, frame)
    assert out64.shape == ref64.shape == (len(sizes), 1, mask, mask) and out64.dtype == torch.float64
    torch.testing.assert_close(out64, ref64, rtol=0, atol=1e-12)
    # float32: the fast path's error against float64 is at most 2x the float32 reference's
    out32 = similarity_mask_prompt(sim.float(), hw, cfg, grid, sam, mask, frame)
    ref32 = similarity_mask_prompt_ref(sim.float(), hw, cfg, grid, sam, mask, frame)
    assert out32.dtype == torch.float32
    err, ref_err = (out32.double() - ref64).abs().max(), (ref32.double() - ref64).abs().max()
    assert err <= 2 * ref_err + 1e-5, f"float32 error {err:.3g} vs the reference's {ref_err:.3g}"


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_thin_images(geometry):
    sim, hw, cfg = _case([(1, 40), (40, 1), (2, 3)], (4, 4), 16, geometry)
    for frame in FRAMES:
        torch.testing.assert_close(
            similarity_mask_prompt(sim, hw, cfg, None, 32, 8, frame),
            similarity_mask_prompt_ref(sim, hw, cfg, None, 32, 8, frame), rtol=0, atol=1e-12,
        )


@pytest.mark.parametrize("frame", FRAMES)
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_gradients_match_reference(geometry, frame):
    sim, hw, cfg = _case([(37, 91), (120, 33)], (3, 4), 60, geometry)
    a, b = sim.clone().requires_grad_(), sim.clone().requires_grad_()
    w = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    (similarity_mask_prompt(a, hw, cfg, (3, 4), 64, 16, frame) * w).sum().backward()
    (similarity_mask_prompt_ref(b, hw, cfg, (3, 4), 64, 16, frame) * w).sum().backward()
    assert a.grad.abs().max() > 0
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("frame", FRAMES)
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_gradcheck_float64(geometry, frame):
    sim = torch.randn(2, 12, dtype=torch.float64, requires_grad=True)
    cfg = SasPConfig(crop_size=9, geometry=geometry)
    hw = [(7, 11), (10, 5)]
    assert torch.autograd.gradcheck(lambda s: similarity_mask_prompt(s, hw, cfg, (3, 4), 16, 4, frame), (sim,))
    assert torch.autograd.gradcheck(lambda s: similarity_mask_prompt_ref(s, hw, cfg, (3, 4), 16, 4, frame), (sim,))


def test_constant_row_is_background_with_zero_gradient():
    sim = torch.full((1, 16), 2.5, requires_grad=True)
    out = similarity_mask_prompt(sim, [(20, 30)], SasPConfig(crop_size=8), None, 32, 8)
    assert torch.equal(out, torch.full_like(out, -8.0))
    out.sum().backward()
    assert torch.equal(sim.grad, torch.zeros_like(sim))


def test_values_and_padding_in_sams_frame():
    """A wide image in the resize_longest frame: its rows below the resized image are SAM's
    padding (lo); a hot cell on the grid's right edge gives hi there; (0, 1) is UGround's range."""
    grid = (4, 4)
    sim = torch.zeros(1, 16)
    sim[0, 7] = 1.0  # row 1, col 3: the right edge
    cfg = SasPConfig(crop_size=4, geometry="pad_square", mask_range=(-3.0, 5.0))
    out = similarity_mask_prompt(sim, [(20, 80)], cfg, grid, 64, 64)[0, 0]  # image -> 16 x 64 in the frame
    assert (out[17:] == -3.0).all(), "below the resized image: SAM's padding"
    assert out.max() <= 5.0 + 1e-6 and out.min() >= -3.0 - 1e-6
    assert out[:16].argmax() % 64 >= 48, "the hot cell lies at the image's right edge"
    unit = similarity_mask_prompt(sim, [(20, 80)], cfg.replace(mask_range=(0.0, 1.0)), grid, 64, 64)[0, 0]
    torch.testing.assert_close(out, -3.0 + 8.0 * unit)


def test_square_frame_is_a_plain_resize_of_the_full_map():
    """SAM 2's frame: the full-resolution map resized to a square, no padding; a grid that
    covers the whole image (pad_square of a square image) makes it a resize of the grid."""
    sim = torch.randn(1, 36, dtype=torch.float64)
    cfg = SasPConfig(crop_size=6, geometry="pad_square", mask_range=(0.0, 1.0))
    out = similarity_mask_prompt(sim, [(6, 6)], cfg, None, 12, 12, "square")
    m = (sim - sim.min()) / (sim.max() - sim.min())
    expect = F.interpolate(m.view(1, 1, 6, 6), (12, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expect)


def test_bad_inputs():
    sim = torch.randn(2, 16)
    with pytest.raises(ValueError, match="frame"):
        similarity_mask_prompt(sim, [(8, 8)] * 2, None, None, 32, 8, "stretch")
    with pytest.raises(ValueError, match="mask_size"):
        similarity_mask_prompt(sim, [(8, 8)] * 2, None, None, 32, 0)
    with pytest.raises(ValueError, match=r"\[2, 2\]"):
        similarity_mask_prompt(sim, [(8, 8)] * 3, None, None, 32, 8)
    bad = sim.clone()
    bad[1, 3] = float("nan")
    with pytest.raises(ValueError, match="row 1"):
        similarity_mask_prompt(bad, [(8, 8)] * 2, None, None, 32, 8)
    with pytest.raises(ValueError, match="mask_range"):
        SasPConfig(mask_range=(1.0, 1.0))
    with pytest.raises(ValueError, match="spatial_prompt"):
        SasPConfig(spatial_prompt="box")


def test_empty_batch():
    sim = torch.zeros(0, 16, requires_grad=True)
    out = similarity_mask_prompt(sim, torch.zeros(0, 2, dtype=torch.long), None, None, 32, 8)
    assert out.shape == (0, 1, 8, 8)
    out.sum().backward()
