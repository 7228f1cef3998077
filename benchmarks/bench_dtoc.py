"""dtoc (DtoC refinement of given points) per provider against dtoc_ref, forward / backward /
both, in one run.

    python benchmarks/bench_dtoc.py              # four image sizes, batch 1 and 64
    python benchmarks/bench_dtoc.py --quick      # two sizes, one reference run each
    python benchmarks/bench_dtoc.py --threads 1  # torch threads (default 2)

Providers:
  reference  dtoc_ref (full H x W maps, one point at a time); timed at batch 1, scaled by the batch
  torch      dtoc (windows around the points, shared between equal image sizes; host-side
             numpy with a written-out backward)
  triton     none of its own: the fused kernel selects and refines in one launch, see
             benchmarks/bench_similarity_as_points.py --device cuda
The points are select_points' (READ-7B, K = 30). Prints median and spread
(torch.utils.benchmark.Timer), extra memory per <SEG>, the speed-up against the reference
measured in the same run, and appends one CSV row per measurement to
benchmarks/out/bench_dtoc.csv.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Provider, autograd_passes, run  # noqa: E402

from sasp import SasPConfig, dtoc, dtoc_ref, select_points  # noqa: E402

CFG = SasPConfig()


def _build(op):
    def build(sim, hw):
        points = select_points(sim.detach(), hw, CFG).points
        return autograd_passes(lambda: op(sim, hw, points, CFG), sim)

    return build


def providers(args):
    if args.providers and set(args.providers) - {"reference", "torch"}:
        raise SystemExit("bench_dtoc.py: providers are reference and torch (the Triton kernel is fused: bench_similarity_as_points.py)")
    return [Provider("reference", _build(dtoc_ref), per_row=True), Provider("torch", _build(dtoc))]


def main(argv=None) -> int:
    run("dtoc", __doc__, providers, ("fwd", "bwd", "full"), argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
