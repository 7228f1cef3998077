"""similarity_mask_prompt (the similarity map as SAM's mask prompt) per provider against
similarity_mask_prompt_ref, forward / backward / both, in one run.

    python benchmarks/bench_mask_prompt.py              # four image sizes, batch 1 and 64
    python benchmarks/bench_mask_prompt.py --quick      # two sizes, one reference run each
    python benchmarks/bench_mask_prompt.py --threads 1  # torch threads (default 2)

Providers:
  reference  similarity_mask_prompt_ref (full H x W map, then SAM's 1024 x 1024 frame, then
             256 x 256, one row at a time); timed at batch 1, scaled by the batch
  torch      similarity_mask_prompt (A_Y m A_X^T with per-size operators, cached)
  torch-cold the same with its operator cache emptied before every call (a new image size)
SAM 1's frame (resize_longest, 1024 -> 256), a 24 x 24 grid, READ-7B's geometry. Prints
median and spread (torch.utils.benchmark.Timer), extra memory per <SEG>, the speed-up against
the reference measured in the same run, and appends one CSV row per measurement to
benchmarks/out/bench_mask_prompt.csv.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Provider, autograd_passes, run  # noqa: E402

from sasp import READ_7B, similarity_mask_prompt, similarity_mask_prompt_ref  # noqa: E402
from sasp.ops import mask_prompt  # noqa: E402

PROVIDERS = ("reference", "torch", "torch-cold")


def _build(op, cold: bool = False):
    def build(sim, hw):
        def forward():
            if cold:
                mask_prompt._operators.cache_clear()
            return op(sim, hw, READ_7B, None, 1024, 256)

        return autograd_passes(forward, sim)

    return build


def providers(args):
    chosen = set(args.providers or PROVIDERS) | {"reference"}
    if chosen - set(PROVIDERS):
        raise SystemExit(f"bench_mask_prompt.py: providers are {', '.join(PROVIDERS)}")
    out = [Provider("reference", _build(similarity_mask_prompt_ref), per_row=True)]
    if "torch" in chosen:
        out.append(Provider("torch", _build(similarity_mask_prompt)))
    if "torch-cold" in chosen:
        out.append(Provider("torch-cold", _build(similarity_mask_prompt, cold=True)))
    return out


def main(argv=None) -> int:
    run("mask_prompt", __doc__, providers, ("fwd", "bwd", "full"), argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
