"""What ``compare`` runs: two arms, each a named predictor plus a description of its model.

A predictor takes a batch of samples and their loaded RGB images and returns one
``Prediction`` per sample::

    def predict(samples: Sequence[Sample], images: Sequence[np.ndarray]) -> Sequence[Prediction]:
        ...   # images[i]: uint8 [H_i, W_i, 3]; return masks bool [H_i, W_i]

``arms_from_factory`` builds the two arms of one model from a ``module:factory`` entry point:
the baseline runs the model inside ``sasp.disabled(model)`` (SAM sees the [SEG] embedding
only), the candidate with SasP on.
"""
from __future__ import annotations

import importlib
import json
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..data.base import Sample

Predictor = Callable[[Sequence[Sample], Sequence[np.ndarray]], Sequence["Prediction"]]


class ArmError(ValueError):
    """An arm cannot be built: a bad entry point or a factory that breaks its contract."""


class Prediction(NamedTuple):
    """One sample's answer.

    Attributes:
        mask: bool [H, W] at the image's size: the union of the masks of the answer's [SEG]
            tokens; all False when the answer has none. (GSVA re-evaluates a rejected query
            as if it had a [SEG] and scores that mask on samples with a target; a predictor
            that wants GSVA's numbers returns that mask with ``has_object=False``.)
        has_object: the answer contains a [SEG] (False: the model says there is no object).
    """

    mask: np.ndarray
    has_object: bool


class Arm(NamedTuple):
    """One side of a comparison.

    Attributes:
        name: short label, unique within the comparison (rows carry it), e.g. "lisa-7b".
        predict: the predictor (see the module docstring).
        describe: JSON-serialisable description of the model and its settings (checkpoint,
            preset, SasP on/off); part of the run's fingerprint, so a resumed run refuses an
            output folder written by another model.
    """

    name: str
    predict: Predictor
    describe: Dict[str, Any]


def check_arms(arms: Sequence[Arm]) -> Tuple[Arm, Arm]:
    """(baseline, candidate) after checking there are two arms with distinct names and
    JSON-serialisable descriptions; raises ValueError naming what is wrong."""
    arms = tuple(arms)
    if len(arms) != 2:
        raise ValueError(f"compare needs exactly two arms (baseline, candidate), got {len(arms)}")
    for role, arm in zip(("baseline", "candidate"), arms):
        if not isinstance(arm, Arm):
            raise ValueError(f"the {role} arm must be an Arm(name, predict, describe), got {type(arm).__name__}")
        if not isinstance(arm.name, str) or not arm.name.strip():
            raise ValueError(f"the {role} arm needs a non-empty name, got {arm.name!r}")
        if not callable(arm.predict):
            raise ValueError(f"the {role} arm's predict is not callable")
        try:
            json.dumps(arm.describe, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ValueError(f"the {role} arm's describe must be JSON-serialisable ({err})") from None
    if arms[0].name == arms[1].name:
        raise ValueError(f"the two arms need distinct names, both are {arms[0].name!r}")
    return arms[0], arms[1]


def load_entry_point(spec: str) -> Any:
    """The object named by ``"package.module:attribute"`` (attribute may be dotted)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ArmError(f"expected 'module:name', got {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ArmError(f"cannot import {module_name} for {spec!r} ({type(err).__name__}: {err})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ArmError(f"{module_name} has no attribute {attr!r} (from {spec!r})")
        obj = getattr(obj, part)
    return obj


def arms_from_factory(
    spec: str,
    kwargs: Dict[str, Any],
    names: Tuple[str, str] = ("baseline", "sasp"),
    device: Optional[str] = None,
) -> Tuple[Arm, Arm]:
    """Two arms over one model from ``spec = "module:make"``.

    ``make(**kwargs)`` (plus ``device=device`` when given) returns ``(model, predict)`` with
    ``predict(model, samples, images) -> list[Prediction]``; the model is wrapped with SasP
    (e.g. ``sasp.wrap_lisa``). The baseline arm calls ``predict`` inside
    ``sasp.disabled(model)``, the candidate calls it as it is. Both arms' ``describe`` hold
    the spec and kwargs (not the device), so the fingerprint changes when either does.
    """
    make = load_entry_point(spec)
    if not callable(make):
        raise ArmError(f"{spec} is not callable")
    built = make(**kwargs) if device is None else make(**kwargs, device=device)
    if not isinstance(built, tuple) or len(built) != 2 or not callable(built[1]):
        raise ArmError(f"{spec}(**kwargs) must return (model, predict), got {type(built).__name__}")
    model, predict = built

    def baseline(samples: Sequence[Sample], images: Sequence[np.ndarray]) -> List[Prediction]:
        from sasp.adapters import disabled

        with disabled(model):
            return predict(model, samples, images)

    def candidate(samples: Sequence[Sample], images: Sequence[np.ndarray]) -> List[Prediction]:
        return predict(model, samples, images)

    common = {"model": spec, "kwargs": kwargs}
    return (
        Arm(names[0], baseline, {**common, "sasp": False}),
        Arm(names[1], candidate, {**common, "sasp": True}),
    )
