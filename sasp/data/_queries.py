"""Queries for the synthetic task: every phrase, the closed vocabulary, and the candidates of
each tier that a scene supports, unambiguous by construction.

A candidate is accepted only when the scene's own object list makes it true of exactly its
targets: a description is used only when one object fits it; a relation ("left of", "above")
only when exactly one object of the group lies on that side of the anchor's visible centroid
by at least ``margin`` pixels and every other member lies on the other side by ``margin``; a
size superlative only when the winner's visible area is ``AREA_RATIO`` times the runner-up's;
a position superlative ("nearest the top") only when the winner leads the runner-up by
``margin``. A false-premise query describes something no object in the scene is.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, FrozenSet, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ._shapes import COLOURS, KINDS, PLURALS

TIERS: Tuple[str, ...] = ("referring", "relational", "reasoning", "multi", "false_premise")

SEG_TOKEN = "[SEG]"
ANSWER = "Sure, [SEG]."
"""The answer to every query with a target; a multi-target query also gets one [SEG] whose
mask is the union of its targets (as ReasonSeg's multi-instance targets are one mask)."""
REFUSAL = "Sorry, there is no such shape."
"""The answer to a false-premise query (no [SEG], empty mask)."""

SINGLE_TEMPLATES: Tuple[str, ...] = (
    "Please segment {}.",
    "Can you segment {} in this image?",
    "Please segment {} in this image.",
    "What is {} in this image? Please output segmentation mask.",
    "Where is {}? Please respond with segmentation mask.",
)
"""LISA's short-question forms (``utils/utils.py`` SHORT_QUESTION_LIST) around a noun phrase."""
MULTI_TEMPLATES: Tuple[str, ...] = (
    "Please segment {}.",
    "Can you segment {} in this image?",
    "Please segment {} in this image.",
    "Where are {}? Please output segmentation mask.",
)

SHAPE_CUES: Tuple[Tuple[str, str, FrozenSet[str]], ...] = (
    ("the round shape", "all the round shapes", frozenset({"circle"})),
    ("the shape with no corners", "all the shapes with no corners", frozenset({"circle"})),
    ("the shape with three corners", "all the shapes with three corners", frozenset({"triangle"})),
    ("the shape with four corners", "all the shapes with four corners", frozenset({"square", "bar", "diamond"})),
    ("the shape with four equal sides", "all the shapes with four equal sides", frozenset({"square", "diamond"})),
    ("the shape with five points", "all the shapes with five points", frozenset({"star"})),
    ("the shape that looks like a plus sign", "all the shapes that look like a plus sign", frozenset({"cross"})),
    ("the long thin shape", "all the long thin shapes", frozenset({"bar"})),
)
"""Implicit descriptions of shape kinds: (singular, plural, the kinds they fit)."""
COLOUR_CUES: Dict[str, str] = {
    "blue": "the sky", "green": "grass", "white": "snow", "black": "coal",
    "yellow": "a lemon", "red": "a tomato", "purple": "a plum", "orange": "a carrot",
}
COLOUR_CUE = "the shape with the colour of {}"
SAME_COLOUR = "the shape with the same colour as {}"
RELATIONS: Dict[str, Tuple[int, int]] = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}
"""Relation -> (axis of the centroid, 0 = x / 1 = y; sign)."""
POSITIONS: Dict[str, Tuple[int, int]] = {
    "nearest the top": (1, -1), "nearest the bottom": (1, 1),
    "nearest the left edge": (0, -1), "nearest the right edge": (0, 1),
}
SIZES: Dict[str, int] = {"largest": 1, "smallest": -1}
AREA_RATIO = 1.25
GLUE: Tuple[str, ...] = ("the", "all", "shape", "shapes")

_TOKEN = re.compile(r"\[SEG\]|[A-Za-z]+|[^\sA-Za-z]")


def split_words(text: str) -> List[str]:
    """Lower-case words and single punctuation marks of ``text``; ``[SEG]`` stays one token.

    >>> split_words("Sure, [SEG].")
    ['sure', ',', '[SEG]', '.']
    """
    return [t if t == SEG_TOKEN else t.lower() for t in _TOKEN.findall(text)]


def _phrases() -> List[str]:
    out = [ANSWER, REFUSAL, COLOUR_CUE, SAME_COLOUR, *SINGLE_TEMPLATES, *MULTI_TEMPLATES, *GLUE]
    out += [*COLOURS, *KINDS, *PLURALS.values(), *COLOUR_CUES.values(), *RELATIONS, *POSITIONS, *SIZES]
    out += [s for cue in SHAPE_CUES for s in cue[:2]]
    return [p.replace("{}", " ") for p in out]


VOCABULARY: Tuple[str, ...] = tuple(sorted({w for p in _phrases() for w in split_words(p)}))
"""Every token (``split_words``) the generator can emit: lower-case words, punctuation and
``[SEG]``, sorted."""


class Candidate(NamedTuple):
    """One query a scene supports: ``family`` (how it was built), the noun phrase, the target
    object indices (empty for a false premise), the anchor object (relations) and whether
    the phrase is plural."""

    family: str
    expression: str
    targets: Tuple[int, ...]
    anchor: Optional[int] = None
    plural: bool = False


@dataclass(frozen=True)
class Facts:
    """What the queries see of a scene: per object its kind, colour, visible area and visible
    centroid [N, 2] (x, y) in pixels, and the margin (pixels) of relations and positions."""

    kinds: Tuple[str, ...]
    colours: Tuple[str, ...]
    area: np.ndarray
    centroid: np.ndarray
    margin: float

    def where(self, kinds: Optional[FrozenSet[str]] = None, colour: Optional[str] = None) -> Tuple[int, ...]:
        return tuple(i for i, (k, c) in enumerate(zip(self.kinds, self.colours))
                     if (kinds is None or k in kinds) and (colour is None or c == colour))


def descriptions(f: Facts, i: int) -> List[Tuple[str, str]]:
    """(family, noun phrase) of the phrases that fit object ``i`` and no other object."""
    k, c = f.kinds[i], f.colours[i]
    out = []
    if len(f.where(kinds=frozenset({k}))) == 1:
        out.append(("kind", f"the {k}"))
    if len(f.where(colour=c)) == 1:
        out.append(("colour", f"the {c} shape"))
    if len(f.where(frozenset({k}), c)) == 1:
        out.append(("colour_kind", f"the {c} {k}"))
    return out


def _groups(f: Facts) -> List[Tuple[str, Tuple[int, ...]]]:
    """(head noun, members) for "shape", each colour, each kind and each colour-kind pair."""
    out = [("shape", tuple(range(len(f.kinds))))]
    out += [(f"{c} shape", f.where(colour=c)) for c in COLOURS]
    out += [(k, f.where(kinds=frozenset({k}))) for k in KINDS]
    out += [(f"{c} {k}", f.where(frozenset({k}), c)) for c in COLOURS for k in KINDS]
    return [(h, m) for h, m in out if m]


def _extreme(values: np.ndarray, members: Sequence[int], lead: float, ratio: bool = False) -> Optional[int]:
    """The member with the largest value when it leads the runner-up by ``lead`` (a difference,
    or a factor when ``ratio``); None otherwise. Needs two members or more."""
    if len(members) < 2:
        return None
    order = sorted(members, key=lambda i: -values[i])
    best, second = values[order[0]], values[order[1]]
    ok = best >= lead * second if ratio else best - second >= lead
    return order[0] if ok else None


def _side(f: Facts, members: Sequence[int], anchor: int, rel: str) -> Optional[Tuple[int, ...]]:
    """Members clearly on side ``rel`` of the anchor, when every other member is clearly on
    the other side; None when one lies within ``margin`` of the anchor on that axis."""
    axis, sign = RELATIONS[rel]
    d = sign * (f.centroid[list(members), axis] - f.centroid[anchor, axis])
    if np.any(np.abs(d) < f.margin):
        return None
    return tuple(m for m, x in zip(members, d) if x > 0)


def _relations(f: Facts, plural: bool) -> List[Candidate]:
    out = []
    groups = _groups(f) if not plural else [("shapes", tuple(range(len(f.kinds))))]
    for anchor in range(len(f.kinds)):
        for _, anchor_desc in descriptions(f, anchor):
            for head, members in groups:
                others = tuple(m for m in members if m != anchor)
                if len(others) < 2:
                    continue
                for rel in RELATIONS:
                    side = _side(f, others, anchor, rel)
                    if side is None or not (len(side) >= 2 if plural else len(side) == 1):
                        continue
                    article = "all the" if plural else "the"
                    out.append(Candidate("relation", f"{article} {head} {rel} {anchor_desc}", side, anchor, plural))
    return out


def referring(f: Facts) -> Dict[str, List[Candidate]]:
    out: Dict[str, List[Candidate]] = {}
    for i in range(len(f.kinds)):
        for family, d in descriptions(f, i):
            out.setdefault(family, []).append(Candidate(family, d, (i,)))
    return out


def relational(f: Facts) -> Dict[str, List[Candidate]]:
    sizes = []
    for head, members in _groups(f):
        for word, sign in SIZES.items():
            best = _extreme(f.area ** sign, members, AREA_RATIO, ratio=True)
            if best is not None:
                sizes.append(Candidate("size", f"the {word} {head}", (best,)))
    return {"relation": _relations(f, plural=False), "size": sizes}


def _positioned(f: Facts, family: str, phrase: str, members: Tuple[int, ...]) -> List[Candidate]:
    """``phrase`` alone when it fits one object, else ``phrase`` + a clear position superlative."""
    if len(members) == 1:
        return [Candidate(family, phrase, members)]
    out = []
    for pos, (axis, sign) in POSITIONS.items():
        best = _extreme(sign * f.centroid[:, axis], members, f.margin)
        if best is not None:
            out.append(Candidate(family + "_position", f"{phrase} {pos}", (best,)))
    return out


def reasoning(f: Facts) -> Dict[str, List[Candidate]]:
    out: Dict[str, List[Candidate]] = {}
    for singular, _, kinds in SHAPE_CUES:
        for c in _positioned(f, "shape_cue", singular, f.where(kinds=kinds)):
            out.setdefault(c.family, []).append(c)
    for colour, thing in COLOUR_CUES.items():
        for c in _positioned(f, "colour_cue", COLOUR_CUE.format(thing), f.where(colour=colour)):
            out.setdefault(c.family, []).append(c)
    for anchor, k in enumerate(f.kinds):
        mates = tuple(i for i in f.where(colour=f.colours[anchor]) if i != anchor)
        if len(f.where(kinds=frozenset({k}))) == 1 and len(mates) == 1:
            phrase = SAME_COLOUR.format(f"the {k}")
            out.setdefault("same_colour", []).append(Candidate("same_colour", phrase, mates, anchor))
    return out


def multi(f: Facts) -> Dict[str, List[Candidate]]:
    out: Dict[str, List[Candidate]] = {"relation": _relations(f, plural=True)}
    pairs = [("colour", f"all the {c} shapes", f.where(colour=c)) for c in COLOURS]
    pairs += [("kind", f"all the {PLURALS[k]}", f.where(kinds=frozenset({k}))) for k in KINDS]
    pairs += [("colour_kind", f"all the {c} {PLURALS[k]}", f.where(frozenset({k}), c)) for c in COLOURS for k in KINDS]
    pairs += [("shape_cue", plural, f.where(kinds=kinds)) for _, plural, kinds in SHAPE_CUES]
    for family, phrase, members in pairs:
        if len(members) >= 2:
            out.setdefault(family, []).append(Candidate(family, phrase, members, plural=True))
    return out


def false_premise(f: Facts) -> Dict[str, List[Candidate]]:
    kinds, colours = set(f.kinds), set(f.colours)
    pairs = set(zip(f.kinds, f.colours))
    near = [(c, k) for c in COLOURS for k in KINDS if (k, c) not in pairs and (k in kinds or c in colours)]
    out = {
        "colour_kind": [Candidate("colour_kind", f"the {c} {k}", ()) for c, k in near],
        "kind": [Candidate("kind", f"the {k}", ()) for k in KINDS if k not in kinds],
        "colour": [Candidate("colour", f"the {c} shape", ()) for c in COLOURS if c not in colours],
        "shape_cue": [Candidate("shape_cue", s, ()) for s, _, ks in SHAPE_CUES if not ks & kinds],
        "relation": [Candidate("relation", f"the shape {rel} the {c} {k}", ()) for c, k in near for rel in RELATIONS],
        "plural": [Candidate("plural", f"all the {c} shapes", (), plural=True) for c in COLOURS if c not in colours]
        + [Candidate("plural", f"all the {PLURALS[k]}", (), plural=True) for k in KINDS if k not in kinds],
    }
    return {k: v for k, v in out.items() if v}


TIER_CANDIDATES = {"referring": referring, "relational": relational, "reasoning": reasoning,
                   "multi": multi, "false_premise": false_premise}


def choose(rng: np.random.Generator, tier: str, f: Facts) -> Optional[Candidate]:
    """A candidate of ``tier``: a family uniformly among those the scene supports, then a
    candidate uniformly within it; None when the scene supports none."""
    families = {k: v for k, v in TIER_CANDIDATES[tier](f).items() if v}
    if not families:
        return None
    names = sorted(families)
    pool = families[names[int(rng.integers(len(names)))]]
    return pool[int(rng.integers(len(pool)))]


def prompt(rng: np.random.Generator, c: Candidate) -> str:
    """The candidate's phrase in one of LISA's question forms (first letter upper case)."""
    templates = MULTI_TEMPLATES if c.plural else SINGLE_TEMPLATES
    return templates[int(rng.integers(len(templates)))].format(c.expression)
