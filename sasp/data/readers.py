"""Reader factories by benchmark name, as ``sasp compare --data NAME`` and ``sasp train`` call
them: ``factory(root, split=..., **options) -> Reader``."""
from __future__ import annotations

from typing import Any, Optional

from .base import Reader


def refcoco(root: str, split: str = "val", **kw: Any) -> Reader:
    from .refer import RefCOCOReader

    return RefCOCOReader(root, "refcoco", split, **kw)


def refcoco_plus(root: str, split: str = "val", **kw: Any) -> Reader:
    from .refer import RefCOCOReader

    return RefCOCOReader(root, "refcoco+", split, **kw)


def refcocog(root: str, split: str = "val", **kw: Any) -> Reader:
    from .refer import RefCOCOReader

    return RefCOCOReader(root, "refcocog", split, **kw)


def fprefcoco(root: str, split: str = "val", **kw: Any) -> Reader:
    from .fp_refcoco import FPRefCOCOReader

    return FPRefCOCOReader(root, "fprefcoco", split, **kw)


def fprefcoco_plus(root: str, split: str = "val", **kw: Any) -> Reader:
    from .fp_refcoco import FPRefCOCOReader

    return FPRefCOCOReader(root, "fprefcoco+", split, **kw)


def fprefcocog(root: str, split: str = "val", **kw: Any) -> Reader:
    from .fp_refcoco import FPRefCOCOReader

    return FPRefCOCOReader(root, "fprefcocog", split, **kw)


def synthetic(root: Optional[str] = None, split: str = "val", size: Any = 200, seed: Any = None, **kw: Any) -> Reader:
    """The synthetic task (no files: ``root`` is ignored); ``size`` samples of ``split``."""
    from .synthetic import SyntheticReasonSeg

    return SyntheticReasonSeg(split=split, size=int(size), seed=None if seed is None else int(seed), **kw)
