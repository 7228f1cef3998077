"""The fused Triton kernel (sasp.ops.triton) against the references, plus the dispatch guard.

Where the kernel runs: on CUDA (compiled) when a GPU is present, otherwise on CPU tensors in
Triton's interpreter. TRITON_INTERPRET=1 is set here, before the kernels are defined, only on
machines without CUDA; a CUDA machine runs the compiled kernels (``benchmarks/gpu_check.sh``).

Criteria (the core's): identical discrete points and labels to ``select_points_ref``;
refined points within max(1e-4 px, 2 float32 ulps) of ``dtoc_ref`` in float64; gradient with
respect to the similarity within 1e-4 relative error (norm) of the float64 reference's.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1"
HAVE_TRITON = importlib.util.find_spec("triton") is not None
if HAVE_TRITON and not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"  # before sasp.ops.triton.sasp_kernel defines the kernels


def _interpreter_usable() -> bool:
    """Whether Triton's interpreter can run here: Triton defines its own library functions
    (tl.sort, tl.max, ...) for the interpreter only when TRITON_INTERPRET=1 is set before it is
    first imported, and ``import torch._dynamo`` (an earlier test's torch.compile) imports it."""
    if "triton" not in sys.modules:
        return True
    import triton.language.standard as std

    return type(std.sort).__name__ == "InterpretedFunction"


IN_PROCESS = CUDA or not HAVE_TRITON or _interpreter_usable()

from core_cases import CASES, ulps32  # noqa: E402
from sasp import READ_7B, READ_13B, SasP, SasPConfig, similarity_as_points  # noqa: E402
from sasp.ops import backend_for, dtoc, dtoc_ref, select_points, select_points_ref  # noqa: E402
from sasp.ops.triton import available, kernel_limits  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"
needs_triton = pytest.mark.skipif(
    not (HAVE_TRITON and IN_PROCESS),
    reason="triton is not installed" if not HAVE_TRITON
    else "Triton was imported before TRITON_INTERPRET=1 was set: test_kernel_tests_in_a_fresh_interpreter runs these",
)


@pytest.fixture(scope="module")
def kernel():
    """The functional entry point of the fused kernel (imports Triton)."""
    from sasp.ops.triton.sasp_kernel import similarity_as_points_triton

    return similarity_as_points_triton


def _upstream(shape, seed=7):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _near_tie(sim_row, hw, cfg, grid, tol=1e-5):
    """Whether the selection of one row hinges on float32 rounding: two positive (or two
    negative) candidates, or a candidate and a threshold, closer than ``tol`` in float64."""
    rows, cols = grid
    dh, dw = rows // cfg.down_sample, cols // cfg.down_sample
    g = F.interpolate(sim_row.double().view(1, 1, rows, cols), (dh, dw), mode="bilinear", align_corners=False).flatten()
    g = (g - g.min()) / (g.max() - g.min())
    pos, neg = g[g >= cfg.t_pos - tol].sort().values, g[g <= cfg.t_neg + tol].sort().values
    close = lambda v: len(v) > 1 and bool((v[1:] - v[:-1]).min() < tol)  # noqa: E731
    near_t = ((g - cfg.t_pos).abs() < tol).any() or ((g - cfg.t_neg).abs() < tol).any()
    return bool(near_t) or close(pos) or close(neg)


def _check(kernel, sim, hw, cfg, grid=None, strict=True):
    """Run the kernel on ``sim`` (float64 values) and compare with the references."""
    rows_cols = grid or (int(sim.shape[1] ** 0.5),) * 2
    sim_k = sim.float().to(DEVICE).requires_grad_()
    refined, labels, discrete = kernel(sim_k, hw, cfg, grid)
    k = cfg.num_points
    assert refined.shape == (sim.shape[0], k, 2) and refined.dtype == torch.float32
    assert labels.shape == (sim.shape[0], k) and labels.dtype == torch.int64
    assert discrete.shape == (sim.shape[0], k, 2) and discrete.dtype == torch.int64
    assert refined.device == labels.device == discrete.device == sim_k.device

    ref_points, ref_labels = select_points_ref(sim.float(), hw, cfg, grid)
    discrete, labels = discrete.cpu(), labels.cpu()
    for row in range(sim.shape[0]):
        same = torch.equal(discrete[row], ref_points[row]) and torch.equal(labels[row], ref_labels[row])
        if not same and not strict:  # CUDA's own interpolation rounding decides near-ties
            same = _near_tie(sim[row], hw[row], cfg, rows_cols)
        assert same, f"row {row}: points/labels differ from select_points_ref"

    sim64 = sim.double().clone().requires_grad_()
    # below radius 4 the window itself changes the function (by up to ~1e-3 px at radius 2):
    # there the oracle is the windowed torch path, in float64
    ref = (dtoc_ref if cfg.dtoc_radius >= 4 else dtoc)(sim64, hw, discrete, cfg, grid)
    tol = torch.maximum(torch.full_like(ref, 1e-4), 2 * ulps32(ref))
    err = (refined.detach().cpu().double() - ref.detach()).abs()
    assert (err <= tol).all(), f"refined points: max error {err.max():.3g} px"

    w = _upstream(ref.shape)
    (gk,) = torch.autograd.grad((refined.double() * w.to(DEVICE)).sum(), sim_k)
    (gr,) = torch.autograd.grad((ref * w).sum(), sim64)
    assert gk.dtype == sim_k.dtype and gk.shape == sim_k.shape
    gk = gk.cpu().double()
    if gr.norm() > 1e-12:
        rel = (gk - gr).norm() / gr.norm()
        assert rel <= 1e-4, f"gradient relative error {rel:.3g}"
    else:  # constant rows: no gradient
        assert gk.abs().max() <= 1e-6
    return refined, labels, discrete


MIXED = [(1, 1), (7, 9), (13, 500)]
SHAPE_CASES = [  # (name, hw per row, cfg, grid_hw, M x N_p)
    ("7b-mixed-small", MIXED, READ_7B, None, 576),
    ("7b-mixed-small-pad", MIXED, READ_7B.replace(geometry="pad_square"), None, 576),
    ("13b-mixed", [(240, 320), (13, 500), (1, 1)], READ_13B, None, 576),
    ("13b-pad-mixed", [(240, 320), (7, 9)], READ_13B.replace(geometry="pad_square"), None, 576),
    ("7b-1080x1920-480x640", [(1080, 1920), (480, 640)], READ_7B, None, 576),
    ("7b-pad-1080x1920", [(1080, 1920)], READ_7B.replace(geometry="pad_square"), None, 576),
    ("7b-tall-thin", [(4000, 40), (40, 4000)], READ_7B.replace(geometry="pad_square"), None, 576),
    ("odd-grid-17x23-ds2", [(300, 200), (200, 300)], READ_7B, (17, 23), 17 * 23),
    ("odd-grid-23x17-ds3-pad", [(61, 47)], READ_7B.replace(down_sample=3, geometry="pad_square"), (23, 17), 23 * 17),
    ("ds5-k60", [(120, 160)], READ_13B.replace(down_sample=5), None, 576),
    ("ds8-fewer-cells-than-k", [(100, 300), (300, 100)], READ_7B.replace(down_sample=8, num_points=30), None, 576),
    ("16x16-grid-k1", [(224, 224)], READ_7B.replace(num_points=1), None, 256),
    ("radius-2-k5", [(50, 70)], READ_7B.replace(dtoc_radius=2, num_points=5), None, 576),
    ("radius-9", [(90, 120)], READ_7B.replace(dtoc_radius=9), None, 576),
]


@needs_triton
@pytest.mark.parametrize("name,hw,cfg,grid,n_p", SHAPE_CASES, ids=[c[0] for c in SHAPE_CASES])
def test_matches_references(kernel, name, hw, cfg, grid, n_p):
    sim = torch.randn(len(hw), n_p, dtype=torch.float64) * 3
    exact = grid is None and cfg.down_sample in (1, 2)  # power-of-two weights: any rounding order agrees
    _check(kernel, sim, hw, cfg, grid, strict=not CUDA or exact)


@needs_triton
@pytest.mark.parametrize("case", CASES[20::23], ids=lambda c: c.name)
def test_matches_references_core_cases(kernel, case):
    """A slice of the core's random cases (sizes, K, down-sampling, scales, quantised maps)."""
    exact = case.cfg.down_sample in (1, 2)
    _check(kernel, case.sim, case.hw, case.cfg, strict=not CUDA or exact)


@needs_triton
def test_signed_zero_at_the_minimum(kernel):
    """A -0.0 beside a +0.0 minimum normalises to -0.0: a negative of value 0 (its raw float32
    bits would make a corrupt key)."""
    sim = torch.randn(1, 576, generator=torch.Generator().manual_seed(3), dtype=torch.float64).abs()
    sim[0, [0, 1, 24, 25]] = 0.0
    sim[0, [5, 6, 29, 30]] = -0.0
    _check(kernel, sim, [(336, 336)], READ_13B)


@needs_triton
@pytest.mark.skipif(CUDA, reason="on CUDA every test above takes the sort path")
def test_sort_path_at_gpu_block_sizes(kernel, monkeypatch):
    """The GPU's selection (one tl.sort of 256 keys for READ-7B's 12 x 12 grid, 1024 for
    READ-13B's 24 x 24) in the interpreter, which otherwise ranks grids of more than 64 cells
    by counting."""
    import sasp.ops.triton.sasp_kernel as sk

    monkeypatch.setattr(sk, "SORT_IN_INTERPRETER_UP_TO", 1024)
    sk.forward_meta.cache_clear()
    try:
        assert sk.forward_meta(576, 24, 24, 1, 4, "cpu")[0]["SORT"]
        sim = torch.randn(2, 576, dtype=torch.float64).mul(2).round()  # with ties
        sim[1] = torch.randn(576, dtype=torch.float64)
        _check(kernel, sim, [(480, 640), (100, 1)], READ_7B.replace(geometry="pad_square"), strict=True)
        _check(kernel, sim[1:], [(64, 48)], READ_13B, strict=True)  # 576 cells: a sort of 1024 keys
    finally:
        sk.forward_meta.cache_clear()


@needs_triton
def test_ties_and_constant_rows(kernel, monkeypatch):
    """Quantised maps (ties in values, min and max) and constant rows, mixed in one call."""
    monkeypatch.setenv("SASP_BACKEND", "torch")  # the comparison below is with the torch path
    sim = torch.randn(4, 576, dtype=torch.float64).mul(2).round()
    sim[1] = 3.0
    sim[3, :] = -1.0
    hw = [(120, 160), (100, 60), (160, 120), (1, 1)]
    refined, labels, _ = _check(kernel, sim, hw, READ_7B, strict=True)
    assert (labels[[1, 3]] == -1).all() and torch.isfinite(refined).all()
    torch_out = similarity_as_points(sim.float().to(DEVICE), hw, READ_7B)
    assert torch.equal(labels, torch_out[1].cpu())
    assert torch.allclose(refined.detach(), torch_out[0].detach().float(), atol=1e-4, rtol=0)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_input_dtypes_match_torch_path(kernel, dtype):
    """The kernel reads any float dtype as float32, as the torch path does; grads keep the dtype."""
    sim = torch.randn(2, 576, device=DEVICE).to(dtype).requires_grad_()
    hw = [(480, 640), (33, 77)]
    refined, labels, discrete = kernel(sim, hw, READ_7B)
    points, ref_labels = select_points(sim.detach(), hw, READ_7B)
    assert torch.equal(discrete, points) and torch.equal(labels, ref_labels)
    ref = dtoc(sim.detach().float(), hw, points, READ_7B)
    assert torch.allclose(refined.detach(), ref, atol=1e-4, rtol=0)
    (g,) = torch.autograd.grad(refined.sum(), sim)
    assert g.dtype == dtype and torch.isfinite(g.float()).all()


@needs_triton
def test_empty_batch(kernel):
    sim = torch.randn(0, 576, device=DEVICE, requires_grad=True)
    refined, labels, discrete = kernel(sim, torch.zeros(0, 2, dtype=torch.long), READ_7B)
    assert refined.shape == (0, 30, 2) and labels.shape == (0, 30) and discrete.shape == (0, 30, 2)
    (g,) = torch.autograd.grad(refined.sum(), sim, allow_unused=True)
    assert g is None or g.shape == (0, 576)


@needs_triton
def test_nan_row_raises_naming_the_row(kernel):
    sim = torch.randn(3, 576, device=DEVICE)
    sim[2, 5] = float("nan")
    with pytest.raises(ValueError, match="row 2"):
        kernel(sim, [(10, 10)] * 3, READ_7B)


@needs_triton
def test_custom_op_registration(kernel):
    """Schema, fake (meta) implementation and autograd registration of sasp::fused_points."""
    import sasp.ops.triton.sasp_kernel as sk

    sim = torch.randn(2, 64, device=DEVICE, requires_grad=True)
    params = sk._row_params(torch.tensor([[30, 40], [9, 7]]), (4, 4), (336, 336), "center_crop").to(DEVICE)
    args = (sim, params, 8, 8, 6, 0.8, 0.2, 2, 336, 336, 4)
    torch.library.opcheck(torch.ops.sasp.fused_points.default, args, test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


@needs_triton
def test_torch_compile_traces_the_kernel(kernel):
    sim = torch.randn(2, 576, device=DEVICE, requires_grad=True)
    hw = [(480, 640), (50, 60)]
    eager = kernel(sim, hw, READ_7B)
    compiled = torch.compile(kernel, backend="aot_eager")(sim, hw, READ_7B)
    for a, b in zip(eager, compiled):
        assert torch.equal(a, b)
    ga = torch.autograd.grad(eager[0].sum(), sim)[0]
    gb = torch.autograd.grad(compiled[0].sum(), sim)[0]
    assert torch.allclose(ga, gb)


@pytest.mark.skipif(not HAVE_TRITON or IN_PROCESS, reason="the kernel tests run in this process")
def test_kernel_tests_in_a_fresh_interpreter():
    """The kernel tests of this file, in a fresh process where TRITON_INTERPRET=1 precedes Triton."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    env.pop("SASP_BACKEND", None)
    cmd = [sys.executable, "-m", "pytest", os.path.abspath(__file__), "-q", "-x", "-p", "no:cacheprovider",
           "-k", "not sm90 and not fresh_interpreter"]
    done = subprocess.run(cmd, env=env, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


_AOT = """
import os, re, subprocess, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import sasp.ops.triton.sasp_kernel as sk

ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
types = {"params_ptr": "*i32", "labels_ptr": "*i64", "discrete_ptr": "*i64", "bad_ptr": "*i32", "count_ptr": "*i32",
         "scale_h": "fp32", "scale_w": "fp32", "t_pos": "fp32", "t_neg": "fp32"}  # other *_ptr: fp32
for rows, ds, radius in [(24, 2, 4), (24, 1, 4)]:  # READ-7B, READ-13B
    for kernel, (consts, options) in [
        (sk._sasp_fwd_kernel, sk.forward_meta(rows * rows, rows, rows, ds, radius, "cuda")),
        (sk._sasp_bwd_kernel, sk.backward_meta(rows * rows, rows, rows, radius)),
    ]:
        sig = {a: "constexpr" if a in consts else types.get(a, "*fp32" if a.endswith("_ptr") else "i32")
               for a in kernel.arg_names}
        k = triton.compile(ASTSource(kernel, sig, consts), target=GPUTarget("cuda", 90, 32), options=options)
        path = os.path.join(sys.argv[1], kernel.fn.__name__ + ".ptx")
        open(path, "w").write(k.asm["ptx"])
        log = subprocess.run([ptxas, "-arch=sm_90a", "-v", path, "-o", path + ".cubin"],
                             capture_output=True, text=True, check=True).stderr
        spills = [int(v) for v in re.findall(r"(\\d+) bytes spill stores", log)]
        print(kernel.fn.__name__, consts, "shared", k.metadata.shared, "spill stores", spills)
        assert max(spills) == 0, log
        assert k.metadata.shared <= 64 * 1024, k.metadata.shared
"""


def _ptxas():
    spec = importlib.util.find_spec("triton") if HAVE_TRITON else None
    path = spec and os.path.join(os.path.dirname(spec.origin), "backends", "nvidia", "bin", "ptxas")
    return path if path and os.access(path, os.X_OK) else None


@pytest.mark.skipif(CUDA or _ptxas() is None, reason="needs Triton's NVIDIA backend; CUDA machines compile above")
def test_kernels_compile_for_sm90_without_spills(tmp_path):
    """Without a GPU: the compiled (not interpreted) kernels build for an H100 (sm_90) with the
    launchers' block sizes, without register spills and within 64 KB of shared memory."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")
    subprocess.run([sys.executable, "-c", _AOT, str(tmp_path)], check=True, env=env, timeout=600)


# --------------------------------------------------------------------------------------------
# The dispatch guard
# --------------------------------------------------------------------------------------------


def test_backend_torch_is_forced(monkeypatch):
    monkeypatch.setenv("SASP_BACKEND", "torch")
    sim = torch.randn(2, 576, device=DEVICE)
    assert backend_for(sim, READ_7B) == "torch"
    out = similarity_as_points(sim, [(40, 50), (60, 70)])
    points, labels = select_points(sim, [(40, 50), (60, 70)])
    assert torch.equal(out[2], points) and torch.equal(out[1], labels)


def test_backend_auto_on_cpu_is_torch(monkeypatch):
    monkeypatch.delenv("SASP_BACKEND", raising=False)
    assert backend_for(torch.randn(1, 576)) == "torch"


def test_backend_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.setenv("SASP_BACKEND", "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        similarity_as_points(torch.randn(1, 576), [(40, 50)])


def test_backend_bogus_value_raises(monkeypatch):
    monkeypatch.setenv("SASP_BACKEND", "cuda-please")
    with pytest.raises(ValueError, match="SASP_BACKEND"):
        similarity_as_points(torch.randn(1, 576), [(40, 50)])


def test_kernel_limits():
    assert kernel_limits(torch.randn(1, 576), READ_7B) is None
    assert "64x64" in kernel_limits(torch.randn(1, 65 * 65), READ_7B)
    assert "dtoc_radius" in kernel_limits(torch.randn(1, 576), READ_7B.replace(dtoc_radius=16))
    assert "dtype" in kernel_limits(torch.zeros(1, 576, dtype=torch.int32))


@needs_triton
def test_backend_triton_by_name_runs_the_kernel(monkeypatch):
    monkeypatch.setenv("SASP_BACKEND", "triton")
    sim = torch.randn(2, 576, device=DEVICE)
    assert available(sim, READ_7B) is None and backend_for(sim, READ_7B) == "triton"
    hw = [(40, 50), (60, 70)]
    refined, labels, discrete = similarity_as_points(sim, hw)
    points, ref_labels = select_points(sim, hw)
    assert torch.equal(discrete, points) and torch.equal(labels, ref_labels)
    with pytest.raises(RuntimeError, match="64x64"):  # beyond the kernel's limits, by name
        similarity_as_points(torch.randn(1, 65 * 65, device=DEVICE), [(40, 50)])


@pytest.mark.skipif(not (CUDA and HAVE_TRITON), reason="the automatic choice uses the kernel only on CUDA")
def test_backend_auto_on_cuda(monkeypatch):
    monkeypatch.delenv("SASP_BACKEND", raising=False)
    assert backend_for(torch.randn(1, 576, device="cuda"), READ_7B) == "triton"
    big = torch.randn(1, 65 * 65, device="cuda")
    assert backend_for(big, READ_7B) == "torch"  # silent fallback beyond the kernel's limits
    similarity_as_points(big, [(40, 50)])


def test_import_sasp_does_not_import_triton():
    code = (
        "import sys, torch, sasp\n"
        "assert 'triton' not in sys.modules, 'import sasp imported triton'\n"
        "sasp.similarity_as_points(torch.randn(2, 576), [(40, 50), (7, 9)])\n"
        "assert 'triton' not in sys.modules, 'the CPU torch path imported triton'\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SASP_BACKEND")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_torch_compile_cpu_torch_path(monkeypatch):
    """A small model with SasP compiles (aot_eager) on the CPU torch path and matches eager."""
    monkeypatch.setenv("SASP_BACKEND", "torch")

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(16, 16)
            self.sasp = SasP(READ_7B)

        def forward(self, patches, seg, hw):
            sim = torch.einsum("mnd,md->mn", self.proj(patches), seg)
            points, labels = self.sasp(sim, hw)
            return points, labels

    model = Head()
    patches, seg = torch.randn(2, 576, 16), torch.randn(2, 16)
    hw = [(480, 640), (50, 60)]
    eager = model(patches, seg, hw)
    compiled = torch.compile(model, backend="aot_eager")(patches, seg, hw)
    assert torch.equal(eager[1], compiled[1])
    assert torch.allclose(eager[0], compiled[0], atol=1e-5, rtol=0)
    ge = torch.autograd.grad(eager[0].sum(), model.proj.weight)[0]
    gc = torch.autograd.grad(compiled[0].sum(), model.proj.weight)[0]
    assert torch.allclose(ge, gc, atol=1e-5, rtol=1e-5)


def test_config_is_hashable_for_compile():
    assert hash(SasPConfig()) == hash(READ_7B)
