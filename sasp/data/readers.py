"""Reader factories by benchmark name, and the registry of data kinds that ``sasp compare
--data NAME`` and ``sasp train --data NAME`` share: ``factory(root, split=..., **options) ->
Reader``, registered as a callable or as its lazy "module:attribute"."""
from __future__ import annotations

import argparse
import importlib
import json
import os
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

from .base import DatasetError, Reader

ReaderFactory = Callable[..., Reader]


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


DATA_KINDS: Dict[str, Union[str, ReaderFactory]] = {
    "reasonseg": "sasp.data.reasonseg:ReasonSegReader",
    "refcoco": refcoco,
    "refcoco+": refcoco_plus,
    "refcocog": refcocog,
    "grefcoco": "sasp.data.grefcoco:GRefCOCOReader",
    "fprefcoco": fprefcoco,
    "fprefcoco+": fprefcoco_plus,
    "fprefcocog": fprefcocog,
    "synthetic": synthetic,
}
"""name -> ``factory(root, split=..., **options) -> Reader`` or its "module:attribute"."""


def register_data_kind(name: str, factory: Union[str, ReaderFactory]) -> None:
    """Make ``--data name`` build readers with ``factory(root, split=..., **options)``."""
    DATA_KINDS[name] = factory


def reader_factory(kind: str) -> ReaderFactory:
    """The factory of a registered data kind, or of a "module:attribute" that is not one.

    Raises:
        DatasetError: an unknown kind, or one whose module does not import (one line).
    """
    entry = DATA_KINDS.get(kind)
    if entry is None:
        if ":" not in kind:
            raise DatasetError(f"unknown data kind {kind!r}; known: {', '.join(sorted(DATA_KINDS))} (or module:factory)")
        entry = kind
    if isinstance(entry, str):
        module, _, attribute = entry.partition(":")
        try:
            entry = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError) as err:
            raise DatasetError(f"data kind {kind!r} is not available here: cannot import {entry} "
                               f"({type(err).__name__}: {err})") from None
    return entry


def open_reader(
    kind: Union[str, ReaderFactory],
    root: Optional[str] = None,
    split: Optional[str] = None,
    options: Optional[Mapping[str, Any]] = None,
) -> Reader:
    """``factory(root, split=split, **options)`` for a data kind (or a factory); ``split=None``
    leaves the reader's default.

    Raises:
        DatasetError: an unknown kind (``reader_factory``), a ``root`` that is not a folder, or
            the reader's own. A TypeError (an option the factory does not take) passes through.
    """
    factory = reader_factory(kind) if isinstance(kind, str) else kind
    if root is not None and not os.path.isdir(root):
        raise DatasetError(f"dataset root not found: {root}")
    kwargs = dict(options or {})
    if split is not None:
        kwargs["split"] = split
    return factory(root, **kwargs)


def parse_option(text: str) -> Tuple[str, Any]:
    """One ``KEY=VALUE`` option as the commands take it (``--data-arg`` and the like): VALUE
    parsed as JSON when it can be, else kept as a string. An ``argparse`` type."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value
