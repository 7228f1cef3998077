"""dtoc per provider (torch, triton) against dtoc_ref (literal, full H x W maps) in float64,
plus bad inputs. The triton provider is the DtoC of the fused kernel of similarity_as_points,
on the points it selects (equal to select_points', which the cases pass)."""
import warnings

import pytest
import torch

from core_cases import (
    CASES,
    TRITON_CASES,
    exact_selection,
    fresh_interpreter_test,
    needs_compile,
    provider_case_params,
    provider_params,
    dtoc_with,
    ulps32,
    upstream,
)
from sasp import READ_7B, dtoc, dtoc_ref, select_points, similarity_as_points

REF_AND_TORCH = provider_params("reference", "torch")


@pytest.mark.parametrize(
    "provider,case", provider_case_params({"torch": CASES, "triton": [c for c in TRITON_CASES if exact_selection(c)]})
)
def test_matches_float64_reference(provider, case):
    sim32 = case.sim.float().requires_grad_()
    sim64 = case.sim.clone().requires_grad_()
    points, _ = select_points(sim32.detach(), case.hw, case.cfg)
    out = dtoc_with(provider)(sim32, case.hw, points, case.cfg)
    ref = dtoc_ref(sim64, case.hw, points, case.cfg)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    tol = torch.maximum(torch.full_like(ref, 1e-4), 2 * ulps32(ref))
    err = (out.detach().double() - ref.detach()).abs()
    assert (err <= tol).all(), f"max error {err.max():.3g} px"

    w = upstream(ref.shape)
    (gout,) = torch.autograd.grad((out.double() * w).sum(), sim32)
    (gref,) = torch.autograd.grad((ref * w).sum(), sim64)
    scale = gref.norm()
    if scale > 1e-12:
        rel = (gout.double() - gref).norm() / scale
        assert rel <= 1e-4, f"gradient relative error {rel:.3g}"
    else:  # a flat neighbourhood: both must vanish
        assert gout.abs().max() <= 1e-6


@pytest.mark.parametrize(
    "hw,cfg",
    [((7, 9), READ_7B), ((37, 61), READ_7B.replace(geometry="pad_square")), ((50, 20), READ_7B.replace(num_points=4, down_sample=1))],
)
def test_gradcheck_float64(hw, cfg):
    sim = torch.randn(2, 64, dtype=torch.float64, requires_grad=True)
    points, _ = select_points(sim.detach(), [hw, hw], cfg)
    assert torch.autograd.gradcheck(lambda s: dtoc(s, [hw, hw], points, cfg), (sim,))


def test_window_radius_bound():
    """Radius 3 is already within 1e-4 px (bound 7e-5); the default 4 within float32 precision."""
    sim = torch.randn(2, 576, dtype=torch.float64) * 30
    hw = [(300, 500), (500, 300)]
    points, _ = select_points(sim, hw)
    ref = dtoc_ref(sim, hw, points)
    for r, bound in ((3, 7e-5), (4, 2e-8), (6, 1e-12)):
        out = dtoc(sim, hw, points, READ_7B.replace(dtoc_radius=r))
        assert (out - ref).abs().max() <= bound


@pytest.mark.parametrize("provider", REF_AND_TORCH)
@pytest.mark.parametrize("bad", [[float("nan")], [float("inf")], [float("inf"), float("-inf")]], ids=["nan", "inf", "both"])
def test_non_finite_raises_naming_row(provider, bad):
    sim = torch.randn(3, 576)
    sim[1, : len(bad)] = torch.tensor(bad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no numpy RuntimeWarning on the way
        with pytest.raises(ValueError, match="row 1"):
            dtoc_with(provider)(sim, [(10, 10)] * 3, torch.zeros(3, 30, 2, dtype=torch.long))


def test_range_beyond_float32_stays_finite():
    """max - min of a finite float32 row can overflow float32 (values near +-3.4e38): DtoC
    normalises such rows in float64 instead of dividing inf by inf."""
    sim = torch.randn(2, 576, dtype=torch.float64)
    sim[0, 3], sim[0, 9] = 3e38, -3e38
    sim32 = sim.float().requires_grad_()
    refined, labels, discrete = similarity_as_points(sim32, [(100, 120)] * 2)
    ref = dtoc_ref(sim, [(100, 120)] * 2, discrete)
    assert (refined.double() - ref).abs().max() <= 1e-4
    refined.sum().backward()
    assert torch.isfinite(sim32.grad).all()
    assert torch.equal(dtoc(sim32, [(100, 120)] * 2, discrete), refined)


@needs_compile
def test_dtoc_under_torch_compile():
    sim = torch.randn(2, 576, requires_grad=True)
    hw = [(480, 640), (50, 60)]
    points, _ = select_points(sim.detach(), hw)
    eager = dtoc(sim, hw, points)
    compiled = torch.compile(lambda s: dtoc(s, hw, points), backend="aot_eager")(sim)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-6)
    (g_eager,) = torch.autograd.grad(eager.sum(), sim)
    (g_compiled,) = torch.autograd.grad(compiled.sum(), sim)
    torch.testing.assert_close(g_compiled, g_eager, rtol=1e-6, atol=1e-6)


def test_host_steps_without_torch_compiler(monkeypatch):
    """torch 2.0 has no ``torch.compiler``: once dynamo is loaded (as torch.compile loads it),
    the host-side steps are disabled with ``torch._dynamo.disable`` instead, and still run."""
    import torch._dynamo

    from sasp.ops import _common

    if hasattr(torch, "compiler"):  # take away what torch 2.0 lacks
        monkeypatch.delattr(torch.compiler, "disable")
    assert _common._compiler_disable() is torch._dynamo.disable
    seen = []
    step = _common.eager(lambda x: seen.append(x) or x + 1)
    assert step(1) == 2 and step(2) == 3 and seen == [1, 2]


def test_bad_points_shape():
    with pytest.raises(ValueError, match="points must have shape"):
        dtoc(torch.randn(2, 576), [(10, 10)] * 2, torch.zeros(2, 30))


def test_points_outside_the_image_raise():
    points = torch.tensor([[[5, 5], [10, 3]]])  # x = 10 is outside a 10-pixel-wide image
    with pytest.raises(ValueError, match="point 1 of <SEG> row 0"):
        dtoc(torch.randn(1, 576), [(20, 10)], points)
    with pytest.raises(ValueError, match="outside"):
        dtoc(torch.randn(1, 576), [(20, 10)], -points)


@pytest.mark.parametrize("cfg", [READ_7B, READ_7B.replace(geometry="pad_square", down_sample=1)], ids=["7b", "pad_square"])
def test_batch_equals_rows(cfg):
    """Windows are shared between rows of equal image size (and repeated points): a batch
    must still equal its rows computed one at a time, values and gradients."""
    hw = [(480, 640), (480, 640), (7, 3000), (480, 640), (1, 1), (7, 3000)]
    sim = torch.randn(len(hw), 576, dtype=torch.float64, requires_grad=True)
    sim.data[3] = sim.data[0]  # the same map twice: identical points
    points, _ = select_points(sim.detach(), hw, cfg)
    out = dtoc(sim, hw, points, cfg)
    (grad,) = torch.autograd.grad(out.sum(), sim)
    for i in range(len(hw)):
        row = sim[i : i + 1].detach().requires_grad_()
        one = dtoc(row, hw[i : i + 1], points[i : i + 1], cfg)
        (g,) = torch.autograd.grad(one.sum(), row)
        torch.testing.assert_close(out[i : i + 1], one, rtol=0, atol=1e-9)
        torch.testing.assert_close(grad[i : i + 1], g, rtol=0, atol=1e-9)


def test_image_side_beyond_the_key_range_raises():
    sim = torch.randn(1, 576)
    points = torch.zeros(1, 3, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="1.6M px"):
        dtoc(sim, [(2_000_000, 10)], points)


@pytest.mark.parametrize("grid", [(24, 30), (10, 40), (40, 10)])
@pytest.mark.parametrize("geometry", ["center_crop", "pad_square"])
def test_non_square_grids_match_reference(grid, geometry):
    """Rows and columns resize to different intermediate lengths (crop_shape): both axes' taps."""
    cfg = READ_7B.replace(geometry=geometry, down_sample=1)
    hw = [(300, 400), (41, 7), (1000, 90)]
    sim = torch.randn(len(hw), grid[0] * grid[1], dtype=torch.float64, requires_grad=True)
    points, _ = select_points(sim.detach(), hw, cfg, grid_hw=grid)
    out = dtoc(sim, hw, points, cfg, grid_hw=grid)
    ref = dtoc_ref(sim, hw, points, cfg, grid_hw=grid)
    assert (out - ref).abs().max() <= 1e-6
    w = upstream(ref.shape)
    (g,) = torch.autograd.grad((out * w).sum(), sim)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), sim)
    assert (g - g_ref).norm() <= 1e-6 * g_ref.norm()


def test_fractional_points_raise():
    with pytest.raises(ValueError, match="whole pixel"):
        dtoc(torch.randn(1, 576), [(20, 30)], torch.tensor([[[3.5, 4.0]]]))
    out = dtoc(torch.randn(1, 576), [(20, 30)], torch.tensor([[[3.0, 4.0]]]))  # whole floats are fine
    assert out.shape == (1, 1, 2)


def test_in_place_change_of_sim_before_backward_raises():
    """The host node keeps no view of sim: autograd's version check catches the change."""
    sim = torch.randn(1, 576, dtype=torch.float64, requires_grad=True)
    leaf = sim * 1  # a non-leaf that may be modified in place
    points, _ = select_points(leaf.detach(), [(100, 120)])
    out = dtoc(leaf, [(100, 120)], points)
    with torch.no_grad():
        leaf.mul_(-1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_empty_keeps_float64():
    sim = torch.randn(0, 576, dtype=torch.float64)
    assert dtoc(sim, torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, 30, 2, dtype=torch.long)).dtype == torch.float64


test_triton_in_a_fresh_interpreter = fresh_interpreter_test(__file__)
