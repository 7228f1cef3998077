"""similarity_as_points per provider (reference, torch, triton) against
similarity_as_points_ref (select_points_ref then dtoc_ref, per row) in float64, plus the
torch path against select_points then dtoc bit for bit, the modules and bad inputs.

Criteria: identical discrete points and labels; refined points within max(1e-4 px, 2 float32
ulps) of the float64 reference; gradient with respect to the similarity within 1e-4 relative
error (norm) of the reference's (``core_cases.check_sasp``).
"""
import importlib
import warnings

import pytest
import torch

from core_cases import (
    ALL,
    CASES,
    CUDA,
    FAST,
    SHAPE_CASES,
    Case,
    check_sasp,
    exact_selection,
    fresh_interpreter_test,
    provider_case_params,
    provider_params,
    sasp_with,
    upstream,
)
from sasp import READ_7B, READ_13B, DtoC, SasP, dtoc, dtoc_ref, select_points, select_points_ref
from sasp.ops import SasPOutput, similarity_as_points


@pytest.mark.parametrize("provider,case", provider_case_params({"torch": SHAPE_CASES, "triton": SHAPE_CASES}))
def test_matches_reference(provider, case):
    check_sasp(provider, case, strict=provider != "triton" or exact_selection(case))


@pytest.mark.parametrize("provider", ALL)
def test_returns_named_tuple(provider):
    out = sasp_with(provider)(torch.randn(2, 576), [(48, 64), (30, 20)], READ_7B.replace(num_points=5))
    assert isinstance(out, SasPOutput)
    refined, labels, discrete = out
    assert refined is out.refined and labels is out.labels and discrete is out.discrete
    assert refined.shape == discrete.shape == (2, 5, 2) and labels.shape == (2, 5)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_torch_path_equals_select_then_dtoc(case):
    """The torch path places DtoC's windows on the selection's grid lines instead of
    de-duplicating the points: bit for bit the numbers of select_points then dtoc (each tested
    against its reference in test_select.py and test_dtoc.py), values and gradients."""
    sim = case.sim.float().requires_grad_()
    refined, labels, discrete = similarity_as_points(sim, case.hw, case.cfg)
    points, ref_labels = select_points(sim.detach(), case.hw, case.cfg)
    assert torch.equal(discrete, points) and torch.equal(labels, ref_labels)
    ref = dtoc(sim, case.hw, points, case.cfg)
    assert torch.equal(refined, ref)
    w = upstream(ref.shape).float()
    (g,) = torch.autograd.grad((refined * w).sum(), sim)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), sim)
    assert torch.equal(g, g_ref)


@pytest.mark.parametrize("provider", FAST)
@pytest.mark.parametrize("cfg", [READ_13B, READ_7B], ids=["13b", "7b"])
def test_signed_zero_at_the_minimum(provider, cfg):
    """A -0.0 beside a +0.0 minimum normalises to -0.0: a negative of value 0 (its raw float32
    bits would make a corrupt key)."""
    sim = torch.randn(1, 576, generator=torch.Generator().manual_seed(3), dtype=torch.float64).abs()
    sim[0, [0, 1, 24, 25]] = 0.0
    sim[0, [5, 6, 29, 30]] = -0.0
    check_sasp(provider, Case(f"signed-zero-{cfg.num_points}", sim, [(336, 336)], cfg))


@pytest.mark.parametrize("provider", FAST)
def test_ties_and_constant_rows(provider):
    """Quantised maps (ties in values, min and max) and constant rows, mixed in one call."""
    sim = torch.randn(4, 576, generator=torch.Generator().manual_seed(11), dtype=torch.float64).mul(2).round()
    sim[1] = 3.0
    sim[3, :] = -1.0
    case = Case("ties-and-constant-rows", sim, [(120, 160), (100, 60), (160, 120), (1, 1)], READ_7B)
    refined, labels, _ = check_sasp(provider, case)
    assert (labels[[1, 3]] == -1).all() and torch.isfinite(refined).all()
    torch_out = sasp_with("torch")(sim.float(), case.hw, READ_7B)
    assert torch.equal(labels, torch_out.labels)
    assert torch.allclose(refined.detach(), torch_out.refined.detach(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("provider", ALL)
def test_constant_map_is_defined(provider):
    """A constant map: every point neutral, refined points finite and inside, no NaN gradient."""
    sim = torch.full((1, 576), 2.5, requires_grad=True)
    refined, labels, discrete = sasp_with(provider)(sim, [(100, 60)])
    assert torch.isfinite(refined).all() and (labels == -1).all()
    ref = dtoc_ref(sim.detach().double(), [(100, 60)], discrete)
    assert (refined.double() - ref).abs().max() < 1e-4
    (grad,) = torch.autograd.grad(refined.sum(), sim)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("provider", ALL)
@pytest.mark.parametrize("bad", [[float("nan")], [float("inf")], [float("inf"), float("-inf")]], ids=["nan", "inf", "both"])
def test_non_finite_raises_naming_row(provider, bad):
    sim = torch.randn(3, 576)
    sim[1, : len(bad)] = torch.tensor(bad)
    with warnings.catch_warnings():
        if provider != "triton":  # (the interpreter's numpy emulation warns)
            warnings.simplefilter("error")  # and no numpy RuntimeWarning on the way
        with pytest.raises(ValueError, match="row 1"):
            sasp_with(provider)(sim, [(10, 10)] * 3)


@pytest.mark.parametrize("provider", FAST)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_input_dtypes(provider, dtype):
    """Every dtype is computed in float32 (the torch path keeps float64 in float64, so that
    gradcheck works); the gradient comes back in the similarity's dtype."""
    sim = torch.randn(3, 576).to(dtype).requires_grad_()
    hw = [(480, 640), (64, 64), (33, 77)]
    refined, labels, discrete = sasp_with(provider)(sim, hw, READ_7B)
    points, ref_labels = select_points_ref(sim.detach(), hw, READ_7B)
    assert torch.equal(discrete, points) and torch.equal(labels, ref_labels)
    work = torch.float64 if provider == "torch" and dtype == torch.float64 else torch.float32
    assert refined.dtype == work
    expected = dtoc(sim.detach().to(work), hw, points, READ_7B)
    if provider == "torch":
        assert torch.equal(refined, expected)
    else:
        assert torch.allclose(refined.detach(), expected, atol=1e-4, rtol=0)
    (grad,) = torch.autograd.grad(refined.sum(), sim)
    assert grad.dtype == dtype and torch.isfinite(grad.float()).all()


@pytest.mark.parametrize("provider", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_empty_batch(provider, dtype):
    sim = torch.zeros(0, 576, dtype=dtype, requires_grad=True)
    refined, labels, discrete = sasp_with(provider)(sim, torch.zeros(0, 2, dtype=torch.long))
    assert refined.shape == (0, 30, 2) and labels.shape == (0, 30) and discrete.shape == (0, 30, 2)
    assert labels.dtype == discrete.dtype == torch.int64
    if provider != "triton":  # the kernel computes float32
        assert refined.dtype == dtype
    (grad,) = torch.autograd.grad(refined.sum(), sim, allow_unused=True)
    assert grad is None or grad.shape == (0, 576)


def test_modules():
    sim = torch.zeros(0, 576, requires_grad=True)
    refined, labels, discrete = SasP()(sim, torch.zeros(0, 2), return_discrete=True)
    assert refined.shape == (0, 30, 2) and labels.shape == (0, 30) and discrete.shape == (0, 30, 2)
    refined.sum().backward()
    sim = torch.randn(3, 576)
    hw = [(480, 640), (20, 1000), (1, 1)]
    out = SasP(num_points=12)(sim, hw, return_discrete=True)
    assert isinstance(out, SasPOutput) and out.refined.shape == (3, 12, 2)
    assert torch.equal(DtoC()(sim, hw, out.discrete), out.refined)
    assert len(SasP()(sim, hw)) == 2
    assert "num_points=12" in repr(SasP(num_points=12))
    sim[1, 5] = float("nan")
    with pytest.raises(ValueError, match="row 1"):
        SasP()(sim, hw)


def test_low_precision_module_matches_float32():
    sim = torch.randn(2, 576).bfloat16().requires_grad_()
    refined, labels = SasP()(sim, [(480, 640), (64, 64)])
    ref, _ = SasP()(sim.detach().float(), [(480, 640), (64, 64)])
    assert refined.dtype == torch.float32 and torch.equal(refined, ref)
    refined.sum().backward()
    assert sim.grad.dtype == torch.bfloat16 and torch.isfinite(sim.grad.float()).all()


@pytest.mark.parametrize("cfg", [READ_7B, READ_7B.replace(geometry="pad_square", down_sample=1, num_points=60)], ids=["7b", "pad_square"])
def test_batch_equals_rows(cfg):
    """Rows of equal image size share their windows: a batch equals its rows one at a time."""
    hw = [(480, 640), (1080, 1920), (7, 3000), (480, 640), (1, 1), (7, 3000), (480, 640)]
    sim = torch.randn(len(hw), 576, requires_grad=True)
    refined, labels, discrete = similarity_as_points(sim, hw, cfg)
    (grad,) = torch.autograd.grad(refined.sum(), sim)
    for i in range(len(hw)):
        row = sim[i : i + 1].detach().requires_grad_()
        one, one_labels, one_discrete = similarity_as_points(row, hw[i : i + 1], cfg)
        (g,) = torch.autograd.grad(one.sum(), row)
        assert torch.equal(one_labels, labels[i : i + 1]) and torch.equal(one_discrete, discrete[i : i + 1])
        torch.testing.assert_close(refined[i : i + 1], one, rtol=0, atol=0)
        torch.testing.assert_close(grad[i : i + 1], g, rtol=0, atol=0)


def test_second_derivatives_raise():
    """The backward is written out: create_graph=True gives the first derivative, and
    differentiating it again raises instead of silently giving zero."""
    sim = torch.randn(1, 576, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 30, 2, dtype=torch.float64, requires_grad=True)  # so that the incoming gradient has a graph
    refined, _ = SasP()(sim, [(100, 120)])
    (g,) = torch.autograd.grad((refined * w).sum(), sim, create_graph=True)
    (g_plain,) = torch.autograd.grad((SasP()(sim, [(100, 120)])[0] * w).sum(), sim)
    assert torch.equal(g.detach(), g_plain)
    with pytest.raises(RuntimeError, match="twice"):
        g.sum().backward()


@pytest.mark.parametrize("provider", provider_params("triton"))
@pytest.mark.skipif(CUDA, reason="on CUDA every kernel call takes the sort path")
def test_sort_path_at_gpu_block_sizes(provider, monkeypatch):
    """The GPU's selection (one tl.sort of 256 keys for READ-7B's 12 x 12 grid, 1024 for
    READ-13B's 24 x 24) in the interpreter, which otherwise ranks grids of more than 64 cells
    by counting."""
    kernels = importlib.import_module("sasp.ops.triton.similarity_as_points")
    monkeypatch.setattr(kernels, "SORT_IN_INTERPRETER_UP_TO", 1024)
    kernels.forward_meta.cache_clear()
    try:
        assert kernels.forward_meta(576, 24, 24, 1, 4, "cpu")[0]["SORT"]
        sim = torch.randn(2, 576, generator=torch.Generator().manual_seed(5), dtype=torch.float64).mul(2).round()  # ties
        sim[1] = torch.randn(576, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
        check_sasp(provider, Case("sort-path-7b-pad", sim, [(480, 640), (100, 1)], READ_7B.replace(geometry="pad_square")))
        check_sasp(provider, Case("sort-path-13b", sim[1:], [(64, 48)], READ_13B))  # 576 cells: a sort of 1024 keys
    finally:
        kernels.forward_meta.cache_clear()


test_triton_in_a_fresh_interpreter = fresh_interpreter_test(__file__)
