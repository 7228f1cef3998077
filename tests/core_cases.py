"""Cases and providers shared by the core ops' tests: test_select.py, test_dtoc.py,
test_similarity_as_points.py and test_triton.py.

Providers: ``reference`` (the literal ``*_ref`` twin), ``torch`` (the torch path) and
``triton`` (the fused kernel of ``similarity_as_points``: compiled on CUDA, otherwise Triton's
interpreter on CPU tensors). The interpreter needs TRITON_INTERPRET=1 before Triton is first
imported: this module sets it on machines without CUDA, when the test modules are collected.
When Triton was imported earlier (``torch.compile`` imports it), the triton provider's tests
skip in this process and ``fresh_interpreter_test`` runs them in a fresh one.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sasp.ops.triton import missing_requirements  # does not import Triton

CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1"
TRITON_MISSING = missing_requirements()
"""Why the fused kernel cannot be imported here (torch or Triton too old, Triton missing), or None."""
HAVE_TRITON = TRITON_MISSING is None
if HAVE_TRITON and not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"  # before sasp.ops.triton.similarity_as_points defines the kernels


def _interpreter_usable() -> bool:
    """Whether Triton's interpreter can run here: Triton defines its own library functions
    (tl.sort, tl.max, ...) for the interpreter only when TRITON_INTERPRET=1 is set before it is
    first imported, and ``import torch._dynamo`` (an earlier test's torch.compile) imports it."""
    if "triton" not in sys.modules:
        return True
    import triton.language.standard as std

    return type(std.sort).__name__ == "InterpretedFunction"


IN_PROCESS = CUDA or not HAVE_TRITON or _interpreter_usable()
DEVICE = "cuda" if CUDA else "cpu"
"""Where the triton provider runs (the other providers run on CPU tensors)."""

from sasp import (  # noqa: E402
    READ_7B,
    READ_13B,
    SasPConfig,
    backend_for,
    dtoc,
    dtoc_ref,
    select_points,
    select_points_ref,
    similarity_as_points,
    similarity_as_points_ref,
)
from sasp.ops import SasPOutput  # noqa: E402

needs_triton = pytest.mark.skipif(
    not (HAVE_TRITON and IN_PROCESS),
    reason=TRITON_MISSING if not HAVE_TRITON
    else "Triton was imported before TRITON_INTERPRET=1 was set: test_triton_in_a_fresh_interpreter runs these",
)


def _torch_version() -> Tuple[int, int]:
    major, minor = torch.__version__.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


_COMPILE_NEEDS = {(3, 12): (2, 4), (3, 13): (2, 6)}
"""The first torch whose torch.compile runs on a Python; otherwise 2.1 (torch 2.0's refuses
Python 3.11, and the tests' tracing is not checked on it)."""
COMPILE_SUPPORTED = _torch_version() >= _COMPILE_NEEDS.get(sys.version_info[:2], (2, 1))
needs_compile = pytest.mark.skipif(
    not COMPILE_SUPPORTED,
    reason=f"torch.compile of torch {torch.__version__} does not run on Python {sys.version_info[0]}.{sys.version_info[1]}",
)


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    sim: torch.Tensor  # [M, N_p] float64 (the fast path gets it as float32)
    hw: List[Tuple[int, int]]
    cfg: SasPConfig
    grid: Optional[Tuple[int, int]] = None


def _size(rng: random.Random, max_side: int) -> Tuple[int, int]:
    """A random image size with aspect ratio up to 1:100."""
    h = max(1, int(10 ** rng.uniform(0, np.log10(max_side))))
    w = int(round(h * 10 ** rng.uniform(-2, 2)))
    return h, min(max(w, 1), max_side)


FIXED = [  # (H, W), num_points: the odd and the large
    ((1, 1), 30), ((7, 9), 30), ((13, 500), 30), ((5000 // 125, 4000), 30), ((4000, 40), 30),
    ((480, 640), 30), ((1080, 1920), 30), ((47, 100), 30), ((1920, 1080), 60), ((4000, 4000), 3),
]


def random_cases(n: int = 200, seed: int = 1234) -> List[Case]:
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for i, (hw, k) in enumerate(FIXED):
        for geometry in ("center_crop", "pad_square"):
            cfg = READ_7B.replace(num_points=k, geometry=geometry)
            cases.append(Case(f"fixed{i}-{hw[0]}x{hw[1]}-{geometry}", torch.randn(1, 576, generator=gen, dtype=torch.float64), [hw], cfg))
    base = [READ_7B, READ_13B, READ_7B.replace(geometry="pad_square")]
    for i in range(n):
        n_p = rng.choice([576, 576, 576, 256, 100, 64, 16])
        cfg = rng.choice(base).replace(
            num_points=rng.choice([1, 5, 30, 30, 60]),
            down_sample=rng.choice([1, 2, 2, 3, 4]),
        )
        m = rng.choice([1, 1, 2, 3])
        hw = [_size(rng, 400) for _ in range(m)]
        sim = torch.randn(m, n_p, generator=gen, dtype=torch.float64) * rng.choice([1e-3, 1.0, 50.0])
        if rng.random() < 0.2:  # ties: quantised maps
            sim = sim.round()
        cases.append(Case(f"rand{i}-M{m}-Np{n_p}-{cfg.geometry}-ds{cfg.down_sample}-K{cfg.num_points}", sim, hw, cfg))
    return cases


CASES = random_cases()
TRITON_CASES = CASES[20::23]
"""The slice of CASES the triton provider runs (the interpreter is slow): sizes, K,
down-sampling, scales and quantised maps."""


def _shape_cases() -> List[Case]:
    mixed = [(1, 1), (7, 9), (13, 500)]
    table = [  # (name, hw per row, cfg, grid_hw, N_p)
        ("7b-mixed-small", mixed, READ_7B, None, 576),
        ("7b-mixed-small-pad", mixed, READ_7B.replace(geometry="pad_square"), None, 576),
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
    gen = torch.Generator().manual_seed(4321)
    return [Case(name, torch.randn(len(hw), n_p, generator=gen, dtype=torch.float64) * 3, hw, cfg, grid)
            for name, hw, cfg, grid, n_p in table]


SHAPE_CASES = _shape_cases()
"""Odd shapes for the whole op: mixed image sizes per batch, both presets and geometries,
non-square grids, down-sampling 1-8, K = 1-60, DtoC radius 2-9."""


# the interpreter emulates the kernels with numpy, which warns about the NaN/Inf it carries
_TRITON_MARKS = (needs_triton, pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"))


def provider_params(*names: str) -> list:
    """Providers for ``@pytest.mark.parametrize("provider", ...)``; triton skips without Triton."""
    return [pytest.param(n, marks=_TRITON_MARKS if n == "triton" else (), id=n) for n in names]


ALL = provider_params("reference", "torch", "triton")
FAST = provider_params("torch", "triton")
"""Every provider, and the fast ones (not the reference), for ``parametrize("provider", ...)``."""


def provider_case_params(cases: Dict[str, List[Case]]) -> list:
    """(provider, case) pairs for ``@pytest.mark.parametrize("provider,case", ...)``."""
    return [pytest.param(p, c, marks=_TRITON_MARKS if p == "triton" else (), id=f"{p}-{c.name}")
            for p, cs in cases.items() for c in cs]


def exact_selection(case: Case) -> bool:
    """Whether the kernel's selection must equal the reference's bit for bit: always in the
    interpreter (CPU arithmetic); on CUDA only where the down-sampling's weights are powers of
    two (any rounding order agrees), elsewhere CUDA's rounding may decide float32 near-ties."""
    return not CUDA or (case.grid is None and case.cfg.down_sample in (1, 2))


def ulps32(x: torch.Tensor) -> torch.Tensor:
    """The float32 spacing at |x| (one ulp)."""
    return torch.from_numpy(np.spacing(np.abs(x.detach().cpu().numpy()).astype(np.float32)).astype(np.float64))


def upstream(shape, seed: int = 7, dtype=torch.float64) -> torch.Tensor:
    """A fixed upstream gradient (weights of the refined points)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --------------------------------------------------------------------------------------------
# Providers
# --------------------------------------------------------------------------------------------


def triton_op() -> Callable[..., SasPOutput]:
    """The fused kernel's entry point (imports Triton)."""
    from sasp.ops.triton import similarity_as_points_triton

    return similarity_as_points_triton


def _torch_sasp(sim, hw, cfg=None, grid=None) -> SasPOutput:
    assert backend_for(sim, cfg, grid) == "torch"
    return similarity_as_points(sim, hw, cfg, grid)


def _triton_sasp(sim, hw, cfg=None, grid=None) -> SasPOutput:
    """The kernel on DEVICE (differentiably moved there), outputs back on CPU."""
    out = triton_op()(sim.to(DEVICE), hw, cfg, grid)
    return SasPOutput(*(t.cpu() for t in out))


def sasp_with(provider: str) -> Callable[..., SasPOutput]:
    """similarity_as_points of a provider: fn(sim, hw, cfg, grid) -> SasPOutput (on CPU)."""
    return {"reference": similarity_as_points_ref, "torch": _torch_sasp, "triton": _triton_sasp}[provider]


def _triton_select(sim, hw, cfg=None, grid=None) -> Tuple[torch.Tensor, torch.Tensor]:
    out = _triton_sasp(sim.detach(), hw, cfg, grid)
    return out.discrete, out.labels


def select_with(provider: str) -> Callable:
    """select_points of a provider: fn(sim, hw, cfg, grid) -> (points, labels) on CPU; triton:
    the selection the fused kernel computes."""
    return {"reference": select_points_ref, "torch": select_points, "triton": _triton_select}[provider]


def dtoc_with(provider: str) -> Callable:
    """dtoc of a provider: fn(sim, hw, points, cfg, grid) -> refined. triton: the fused kernel
    refines its own selection, which must be ``points`` (the cases pass select_points')."""
    if provider != "triton":
        return {"reference": dtoc_ref, "torch": dtoc}[provider]

    def run(sim, hw, points, cfg=None, grid=None):
        refined, _, discrete = _triton_sasp(sim, hw, cfg, grid)
        assert torch.equal(discrete, points.cpu()), "the kernel's selection differs from the given points"
        return refined

    return run


# --------------------------------------------------------------------------------------------
# The whole op against its reference
# --------------------------------------------------------------------------------------------

_ORACLE: Dict[str, Tuple[SasPOutput, torch.Tensor]] = {}


def oracle(case: Case) -> Tuple[SasPOutput, torch.Tensor]:
    """similarity_as_points_ref of the case in float64 and its gradient under ``upstream``
    (computed once per case and process: several providers compare with it)."""
    if case.name not in _ORACLE:
        sim64 = case.sim.clone().requires_grad_()
        ref = similarity_as_points_ref(sim64, case.hw, case.cfg, case.grid)
        (grad,) = torch.autograd.grad((ref.refined * upstream(ref.refined.shape)).sum(), sim64)
        _ORACLE[case.name] = (SasPOutput(ref.refined.detach(), ref.labels, ref.discrete), grad)
    return _ORACLE[case.name]


def near_tie(sim_row: torch.Tensor, cfg: SasPConfig, grid: Tuple[int, int], tol: float = 1e-5) -> bool:
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


def check_sasp(provider: str, case: Case, strict: bool = True) -> SasPOutput:
    """Run a provider on the case (float32) and compare with the float64 reference: identical
    discrete points and labels (``strict=False``: except rows at a float32 near-tie); refined
    points within max(1e-4 px, 2 float32 ulps); gradient within 1e-4 relative error (norm).
    Below radius 4 the window itself changes the function (by up to ~1e-3 px at radius 2):
    there the oracle is the windowed torch path in float64."""
    cfg, grid = case.cfg, case.grid
    k, m = cfg.num_points, case.sim.shape[0]
    sim = case.sim.float().requires_grad_()
    out = sasp_with(provider)(sim, case.hw, cfg, grid)
    refined, labels, discrete = out
    assert refined.shape == (m, k, 2) and refined.dtype == torch.float32
    assert labels.shape == (m, k) and labels.dtype == torch.int64
    assert discrete.shape == (m, k, 2) and discrete.dtype == torch.int64

    ref, grad_ref = oracle(case)
    for row in range(m):
        same = torch.equal(discrete[row], ref.discrete[row]) and torch.equal(labels[row], ref.labels[row])
        if not same and not strict:  # CUDA's own interpolation rounding decides near-ties
            same = near_tie(case.sim[row], cfg, grid or (int(case.sim.shape[1] ** 0.5),) * 2)
        assert same, f"row {row}: points/labels differ from the reference"
    w = upstream(refined.shape)
    if cfg.dtoc_radius < 4 or not torch.equal(discrete, ref.discrete):
        sim64 = case.sim.clone().requires_grad_()
        expected = (dtoc_ref if cfg.dtoc_radius >= 4 else dtoc)(sim64, case.hw, discrete, cfg, grid)
        (grad_ref,) = torch.autograd.grad((expected * w).sum(), sim64)
        expected = expected.detach()
    else:
        expected = ref.refined
    tol = torch.maximum(torch.full_like(expected, 1e-4), 2 * ulps32(expected))
    err = (refined.detach().double() - expected).abs()
    assert (err <= tol).all(), f"refined points: max error {err.max():.3g} px"

    (grad,) = torch.autograd.grad((refined.double() * w).sum(), sim)
    assert grad.dtype == sim.dtype and grad.shape == sim.shape
    if grad_ref.norm() > 1e-12:
        rel = (grad.double() - grad_ref).norm() / grad_ref.norm()
        assert rel <= 1e-4, f"gradient relative error {rel:.3g}"
    else:  # constant rows: no gradient
        assert grad.abs().max() <= 1e-6
    return out


# --------------------------------------------------------------------------------------------
# The triton provider in a fresh interpreter
# --------------------------------------------------------------------------------------------


def fresh_interpreter_test(test_file: str) -> Callable[[], None]:
    """A test that runs the triton tests of ``test_file`` in a fresh process, where
    TRITON_INTERPRET=1 precedes Triton (used where this process imported Triton too early)."""

    @pytest.mark.skipif(not HAVE_TRITON or IN_PROCESS, reason="the triton provider's tests run in this process")
    def test_triton_in_a_fresh_interpreter() -> None:
        env = dict(os.environ, TRITON_INTERPRET="1")
        env.pop("SASP_BACKEND", None)
        cmd = [sys.executable, "-m", "pytest", os.path.abspath(test_file), "-q", "-x", "-p", "no:cacheprovider",
               "-k", "triton and not fresh_interpreter and not sm90"]
        root = os.path.dirname(os.path.dirname(os.path.abspath(test_file)))
        done = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]

    return test_triton_in_a_fresh_interpreter
