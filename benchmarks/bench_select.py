"""select_points (discrete selection) per provider against select_points_ref, in one run.

    python benchmarks/bench_select.py              # four image sizes, batch 1 and 64
    python benchmarks/bench_select.py --quick      # two sizes, fewer repetitions
    python benchmarks/bench_select.py --threads 1  # torch threads (default 2)

Providers:
  reference  select_points_ref (METHOD.md step by step, one row and one point at a time);
             timed at batch 1, scaled by the batch
  torch      select_points (batched, host-side numpy after one resize on sim's device)
  triton     none of its own: the fused kernel selects and refines in one launch, see
             benchmarks/bench_similarity_as_points.py --device cuda
Selection has no gradient: one pass, fwd. Prints median and spread (torch.utils.benchmark.Timer),
extra memory per <SEG>, the speed-up against the reference measured in the same run, and
appends one CSV row per measurement to benchmarks/out/bench_select.csv.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Provider, run  # noqa: E402

from sasp import SasPConfig, select_points, select_points_ref  # noqa: E402

CFG = SasPConfig()


def providers(args):
    if args.providers and set(args.providers) - {"reference", "torch"}:
        raise SystemExit("bench_select.py: providers are reference and torch (the Triton kernel is fused: bench_similarity_as_points.py)")
    return [
        Provider("reference", lambda sim, hw: {"fwd": lambda: select_points_ref(sim, hw, CFG)}, per_row=True),
        Provider("torch", lambda sim, hw: {"fwd": lambda: select_points(sim, hw, CFG)}),
    ]


def main(argv=None) -> int:
    run("select", __doc__, providers, ("fwd",), argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
