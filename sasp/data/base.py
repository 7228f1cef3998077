"""What every dataset reader yields: one ``Sample`` per query, read lazily.

A reader is a sequence (``len(reader)``, ``reader[i]``) of ``Sample`` objects in a fixed,
documented order, so that two processes (or a resumed run) see the same sample at the same
index. Reading the index files happens when the reader is built and fails at once, with one
line naming the file, when the dataset root is malformed (``DatasetError``). Anything that can
go wrong with a single sample (a missing image, a broken polygon) is raised when that sample's
image or mask is loaded, as ``SampleError``, so that an evaluation records an error row for it
and goes on.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

ImageSource = Union[str, np.ndarray]

IGNORE = 255
"""Mask value of pixels that count neither as target nor as background (ReasonSeg's "ignore"
polygons); ``sasp.metrics`` skips them, as LISA's ``intersectionAndUnionGPU`` does."""


class DatasetError(ValueError):
    """The dataset root or one of its index files is malformed (the message names the file)."""


class SampleError(ValueError):
    """One sample cannot be read (missing image, broken annotation); the message says why."""


@dataclass
class Sample:
    """One query on one image, with its target.

    Attributes:
        id: stable and unique within the reader (e.g. ``"refcoco/val/ref123/sent0"``).
        image: a path or an RGB uint8 array [H, W, 3]; ``load_image`` reads either.
        query: the referring expression or question, as the dataset writes it.
        target: callable returning the target mask uint8 [H, W] (1 target, 0 background,
            ``IGNORE`` ignored), all zeros for a no-target / false-premise query. Callable so
            that readers stay lazy; it raises ``SampleError`` for a broken annotation.
        has_target: False for no-target (gRefCOCO) and false-premise (FP-RefCOCO) queries,
            whose correct answer has no [SEG].
        answer: the answer a model is trained towards ("Sure, [SEG]." or a refusal).
        meta: anything else the reader knows (dataset, split, image size, tier ...).
        instruction: the instruction exactly as the model is asked, when the dataset defines
            one; None: ``instruction_for`` builds LISA's question form from ``query``.
    """

    id: str
    image: ImageSource
    query: str
    target: Callable[[], np.ndarray]
    has_target: bool = True
    answer: Optional[str] = None
    meta: Dict[str, Any] = field(default_factory=dict)
    instruction: Optional[str] = None


def instruction_for(sample: Sample) -> str:
    """What the model is asked about ``sample``: its ``instruction``, else LISA's validation
    forms (dvlab-research/LISA ``utils/dataset.py`` ``ValDataset``): a full sentence
    (``meta["is_sentence"]``) becomes "{query} Please output segmentation mask.", a phrase
    "What is {query} in this image? Please output segmentation mask."."""
    if sample.instruction:
        return sample.instruction
    query = sample.query.strip()
    if sample.meta.get("is_sentence"):
        return f"{query} Please output segmentation mask."
    return f"What is {query} in this image? Please output segmentation mask."


class Reader(Sequence[Sample]):
    """Base class of the readers: a name plus the sequence protocol over ``Sample``."""

    name: str = "dataset"

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:  # pragma: no cover - abstract
        raise NotImplementedError

    def fingerprint(self) -> Dict[str, Any]:
        """What identifies this reader's samples (name, root, split, count): an evaluation
        refuses to resume into an output folder written for another fingerprint."""
        return {"name": self.name, "count": len(self)}


class IndexedReader(Reader):
    """A reader whose samples are listed when it is built (the file-based readers).

    Subclasses fill ``_items``, one record per sample with the attributes ``id``, ``image``,
    ``query``, ``has_target``, ``answer`` and ``meta`` of its ``Sample`` (a NamedTuple of
    their own, which may carry more), and define ``_target(index)``, the mask of sample
    ``index``, read when the sample's ``target()`` is called. ``fingerprint_fields`` names the
    attributes the fingerprint holds besides the name and the count.
    """

    _items: List[Any]
    fingerprint_fields: Tuple[str, ...] = ()

    def _target(self, index: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        if not -len(self._items) <= index < len(self._items):
            raise IndexError(f"index {index} out of range for {len(self._items)} samples")
        index %= len(self._items)
        item = self._items[index]
        return Sample(
            id=item.id,
            image=item.image,
            query=item.query,
            target=functools.partial(self._target, index),
            has_target=item.has_target,
            answer=item.answer,
            meta=dict(item.meta),
        )

    def fingerprint(self) -> Dict[str, Any]:
        fields = {name: getattr(self, name) for name in self.fingerprint_fields}
        return {"name": self.name, **fields, "count": len(self)}
