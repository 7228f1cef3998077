"""Random and fixed cases for the core ops, shared by test_select.py and test_dtoc.py."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
import torch

from sasp import READ_7B, READ_13B, SasPConfig


@dataclass
class Case:
    name: str
    sim: torch.Tensor  # [M, N_p] float64 (the fast path gets it as float32)
    hw: List[Tuple[int, int]]
    cfg: SasPConfig


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


def ulps32(x: torch.Tensor) -> torch.Tensor:
    """The float32 spacing at |x| (one ulp)."""
    return torch.from_numpy(np.spacing(np.abs(x.detach().cpu().numpy()).astype(np.float32)).astype(np.float64))
