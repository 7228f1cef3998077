"""A toy reader and a deterministic fake predictor, for tests, examples and benchmarks of the
harness without a model::

    from sasp.evaluate import Arm, compare
    from sasp.evaluate.testing import ThresholdPredictor, ToyReader

    reader = ToyReader(50, no_target=[3, 7])
    arms = [Arm("t150", ThresholdPredictor(threshold=150), {"threshold": 150}),
            Arm("t120", ThresholdPredictor(threshold=120), {"threshold": 120})]
    summary = compare(reader, arms, "toy_run")
"""
from __future__ import annotations

import functools
import time
from typing import Any, Collection, Dict, List, Sequence, Tuple

import numpy as np

from ..data.base import IGNORE, Reader, Sample, SampleError
from .arms import Prediction


class ToyReader(Reader):
    """``n`` in-memory samples: a noisy picture whose red channel is brighter inside a
    rectangle (the target). The rectangle's top row is ``IGNORE``.

    Args:
        n: number of samples; seed: the pictures' seed (sample i uses ``default_rng([seed, i])``).
        sizes: image sizes (H, W), cycled over the samples.
        no_target: indices with no rectangle (``has_target=False``, all-zero target).
        missing: indices whose image is a path that does not exist.
        broken: indices whose ``target()`` raises ``SampleError``.
    """

    name = "toy"

    def __init__(
        self,
        n: int = 20,
        seed: int = 0,
        sizes: Sequence[Tuple[int, int]] = ((24, 32), (30, 20), (17, 17)),
        no_target: Collection[int] = (),
        missing: Collection[int] = (),
        broken: Collection[int] = (),
    ):
        if n < 0 or not sizes:
            raise ValueError(f"ToyReader needs n >= 0 and at least one size, got n={n}, sizes={sizes}")
        self.n, self.seed, self.sizes = n, seed, [tuple(s) for s in sizes]
        self.no_target, self.missing, self.broken = set(no_target), set(missing), set(broken)

    def __len__(self) -> int:
        return self.n

    def _draw(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        h, w = self.sizes[i % len(self.sizes)]
        rng = np.random.default_rng([self.seed, i])
        image = rng.integers(0, 140, size=(h, w, 3), dtype=np.uint8)
        target = np.zeros((h, w), np.uint8)
        if i not in self.no_target:
            y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
            y1, x1 = y0 + int(rng.integers(3, h // 2 + 2)), x0 + int(rng.integers(3, w // 2 + 2))
            image[y0:y1, x0:x1, 0] = rng.integers(110, 256, size=image[y0:y1, x0:x1, 0].shape)
            target[y0:y1, x0:x1] = 1
            target[y0, x0:x1] = IGNORE
        return image, target

    def _target(self, i: int) -> np.ndarray:
        if i in self.broken:
            raise SampleError(f"toy sample {i}: broken annotation")
        return self._draw(i)[1]

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < self.n:
            raise IndexError(i)
        image: Any = f"/nonexistent/toy/{i}.png" if i in self.missing else self._draw(i)[0]
        has_target = i not in self.no_target
        return Sample(
            id=f"toy/{i}", image=image, query="Segment the red rectangle.",
            target=functools.partial(self._target, i), has_target=has_target,
            answer="Sure, [SEG]." if has_target else "There is no red rectangle.", meta={"index": i},
        )

    def fingerprint(self) -> Dict[str, Any]:
        return {"name": self.name, "count": self.n, "seed": self.seed, "sizes": self.sizes,
                "no_target": sorted(self.no_target), "missing": sorted(self.missing), "broken": sorted(self.broken)}


class ThresholdPredictor:
    """A deterministic fake model: mask = image[..., channel] > threshold; it "answers" with a
    [SEG] when the mask has at least ``min_pixels`` pixels (else an empty mask, no object).

    Args:
        fail_ids: sample ids on which it raises ``RuntimeError`` (the failure is per sample,
            so a batch holding one fails as a whole, as a model would).
        sleep: seconds it waits per sample (to make runs slow enough to interrupt).
    """

    def __init__(self, channel: int = 0, threshold: int = 128, min_pixels: int = 1,
                 fail_ids: Collection[str] = (), sleep: float = 0.0):
        self.channel, self.threshold, self.min_pixels = channel, threshold, min_pixels
        self.fail_ids, self.sleep = set(fail_ids), sleep

    def __call__(self, samples: Sequence[Sample], images: Sequence[np.ndarray]) -> List[Prediction]:
        out = []
        for sample, image in zip(samples, images):
            if sample.id in self.fail_ids:
                raise RuntimeError(f"fake model failure on {sample.id}")
            mask = image[..., self.channel] > self.threshold
            has_object = int(mask.sum()) >= self.min_pixels
            out.append(Prediction(mask if has_object else np.zeros_like(mask), has_object))
        if self.sleep:
            time.sleep(self.sleep * len(samples))
        return out
