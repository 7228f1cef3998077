"""The Triton backend of similarity_as_points: availability and limits, the custom op, torch.compile,
the compiled kernels' resources, and the dispatch guard.

The kernel's numbers are tested as the ``triton`` provider of each op: tests/test_select.py,
tests/test_dtoc.py and tests/test_similarity_as_points.py. Where the kernel runs: on CUDA
(compiled) when a GPU is present, otherwise on CPU tensors in Triton's interpreter
(``core_cases`` sets TRITON_INTERPRET=1 before the kernels are defined, only on machines
without CUDA); a CUDA machine runs the compiled kernels (``benchmarks/gpu_check.sh``).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from core_cases import CUDA, DEVICE, HAVE_TRITON, fresh_interpreter_test, needs_compile, needs_triton, triton_op
from sasp import READ_7B, SasP, SasPConfig, backend_for, select_points, similarity_as_points
from sasp.ops import SasPOutput
from sasp.ops.triton import available, kernel_limits


@pytest.fixture(scope="module")
def kernels():
    """The kernel module (imports Triton)."""
    return importlib.import_module("sasp.ops.triton.similarity_as_points")


@needs_triton
def test_custom_op_registration(kernels):
    """Schema, fake (meta) implementation and autograd registration of sasp::similarity_as_points."""
    sim = torch.randn(2, 64, device=DEVICE, requires_grad=True)
    params = kernels._row_params(torch.tensor([[30, 40], [9, 7]]), (4, 4), (336, 336), "center_crop").to(DEVICE)
    args = (sim, params, 8, 8, 6, 0.8, 0.2, 2, 336, 336, 4)
    torch.library.opcheck(torch.ops.sasp.similarity_as_points.default, args, test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


@needs_triton
def test_torch_compile_traces_the_kernel():
    kernel = triton_op()
    sim = torch.randn(2, 576, device=DEVICE, requires_grad=True)
    hw = [(480, 640), (50, 60)]
    eager = kernel(sim, hw, READ_7B)
    compiled = torch.compile(kernel, backend="aot_eager")(sim, hw, READ_7B)
    assert isinstance(eager, SasPOutput) and isinstance(compiled, SasPOutput)
    for a, b in zip(eager, compiled):
        assert torch.equal(a, b)
    ga = torch.autograd.grad(eager[0].sum(), sim)[0]
    gb = torch.autograd.grad(compiled[0].sum(), sim)[0]
    assert torch.allclose(ga, gb)


test_triton_in_a_fresh_interpreter = fresh_interpreter_test(__file__)


_AOT = """
import os, re, subprocess, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import sasp.ops.triton.similarity_as_points as sk

ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
types = {"params_ptr": "*i32", "labels_ptr": "*i64", "discrete_ptr": "*i64", "bad_ptr": "*i32", "count_ptr": "*i32",
         "scale_h": "fp32", "scale_w": "fp32", "t_pos": "fp32", "t_neg": "fp32"}  # other *_ptr: fp32
for rows, ds, radius in [(24, 2, 4), (24, 1, 4)]:  # READ-7B, READ-13B
    for kernel, (consts, options) in [
        (sk._similarity_as_points_fwd_kernel, sk.forward_meta(rows * rows, rows, rows, ds, radius, "cuda")),
        (sk._similarity_as_points_bwd_kernel, sk.backward_meta(rows * rows, rows, rows, radius)),
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


@pytest.mark.parametrize("lack", ["torch", "triton", "no-triton"])
def test_backend_triton_by_name_says_what_is_missing(monkeypatch, lack):
    """An old torch (no torch.library.custom_op) or Triton (no triton.knobs), or none: the
    requested backend's error names the versions the kernel needs."""
    from sasp.ops import triton as backend

    monkeypatch.setenv("SASP_BACKEND", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    if lack == "torch":
        monkeypatch.delattr(torch.library, "custom_op")
    else:
        monkeypatch.setattr(backend, "_triton_has_knobs", lambda: False if lack == "triton" else None)
    backend.missing_requirements.cache_clear()
    try:
        with pytest.raises(RuntimeError, match=r"needs torch >= 2\.4 and triton >= 3\.4") as err:
            similarity_as_points(torch.randn(1, 576), [(40, 50)])
    finally:
        backend.missing_requirements.cache_clear()
    assert ("not installed" in str(err.value)) == (lack == "no-triton")
    assert (f"found torch {torch.__version__}" in str(err.value)) == (lack != "no-triton")


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


@needs_compile
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
