"""sasp.data.synthetic: determinism, splits, exact geometry, and every query checked against
the scene by an independent reading of its words.

The oracle below re-rasterises every object from ``meta["objects"]`` on the full image grid
(polygons through matplotlib's ``Path``), paints them in order, and interprets each query
phrase with its own tables of what the words mean ("left of": smaller centroid x, "three
corners": a triangle ...). Nothing in it calls the generator's rasterisers or query builders.
"""
import functools
import hashlib
import math
import re

import numpy as np
import pytest

from sasp.data import load_image
from sasp.data.base import instruction_for
from sasp.data._shapes import cross_raster, disc_raster, polygon_raster, rect_raster, regular_polygon
from sasp.data.synthetic import (
    ANSWER, MARGIN, MIN_VISIBLE_FRACTION, MIN_VISIBLE_PIXELS, REFUSAL, TIERS, VOCABULARY,
    SyntheticReasonSeg, image_size, split_words,
)

Path = pytest.importorskip("matplotlib.path").Path

# ---- what the words mean, written independently of the generator's tables -------------------
COLOURS = ("red", "green", "blue", "yellow", "white", "black", "purple", "orange")
CORNERS = {"circle": 0, "triangle": 3, "square": 4, "bar": 4, "diamond": 4, "star": 10, "cross": 12}
PLURAL = {"circles": "circle", "squares": "square", "triangles": "triangle", "bars": "bar",
          "diamonds": "diamond", "stars": "star", "crosses": "cross"}
THINGS = {"the sky": "blue", "grass": "green", "snow": "white", "coal": "black", "a lemon": "yellow",
          "a tomato": "red", "a plum": "purple", "a carrot": "orange"}
CUES = {
    "round shape": {"circle"},
    "shape with no corners": {k for k, c in CORNERS.items() if c == 0},
    "shape with three corners": {k for k, c in CORNERS.items() if c == 3},
    "shape with four corners": {k for k, c in CORNERS.items() if c == 4},
    "shape with four equal sides": {"square", "diamond"},
    "shape with five points": {"star"},
    "shape that looks like a plus sign": {"cross"},
    "long thin shape": {"bar"},
}
# relation -> (axis, sign): member is on that side when sign * (member - anchor) > 0
SIDES = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}
EDGES = {"top": (1, -1), "bottom": (1, 1), "left edge": (0, -1), "right edge": (0, 1)}


def oracle_full_mask(obj, yy, xx):
    """Object's full mask [H, W] from its geometry on the pixel centres ``yy``, ``xx`` [H, W]."""
    g, kind = obj["geometry"], obj["kind"]
    if kind == "circle":
        return (xx - g["cx"]) ** 2 + (yy - g["cy"]) ** 2 <= g["r"] ** 2
    if kind == "diamond":
        return np.abs(xx - g["cx"]) + np.abs(yy - g["cy"]) <= g["r"]

    def box(x, y, w, h):
        return (xx >= x) & (xx < x + w) & (yy >= y) & (yy < y + h)

    if kind == "square":
        return box(g["x"], g["y"], g["side"], g["side"])
    if kind == "bar":
        return box(g["x"], g["y"], g["width"], g["height"])
    if kind == "cross":
        a, L, t = (g["length"] - g["thickness"]) // 2, g["length"], g["thickness"]
        return box(g["x"], g["y"] + a, L, t) | box(g["x"] + a, g["y"], t, L)
    v = np.asarray(g["vertices"])
    near = (xx >= v[:, 0].min() - 1) & (xx <= v[:, 0].max() + 1) & (yy >= v[:, 1].min() - 1) & (yy <= v[:, 1].max() + 1)
    inside = np.zeros(xx.shape, dtype=bool)
    inside[near] = Path(v).contains_points(np.stack([xx[near], yy[near]], 1))
    return inside


def oracle_scene(sample):
    """Per object: full mask, visible mask (painter's order), visible area and centroid."""
    h, w = sample.meta["height"], sample.meta["width"]
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    full = [oracle_full_mask(o, yy, xx) for o in sample.meta["objects"]]
    owner = np.full((h, w), -1)
    for i, m in enumerate(full):
        owner[m] = i
    visible = [owner == i for i in range(len(full))]
    area = np.array([v.sum() for v in visible], dtype=float)
    centroid = np.array([[np.nonzero(v)[1].mean() + 0.5, np.nonzero(v)[0].mean() + 0.5] for v in visible])
    return full, visible, area, centroid


class Reading:
    """Interprets a query phrase on a scene; asserts that it is unambiguous."""

    def __init__(self, sample, oracle=None):
        self.sample, self._oracle = sample, oracle
        self.objs = sample.meta["objects"]
        self.margin = MARGIN * math.sqrt(sample.meta["height"] * sample.meta["width"])

    @property
    def area(self):
        return self.oracle[2]

    @property
    def centroid(self):
        return self.oracle[3]

    @functools.cached_property
    def oracle(self):
        return self._oracle if self._oracle is not None else oracle_scene(self.sample)

    def members(self, head):
        head = re.sub(r"\bshapes\b", "shape", head).replace("look like", "looks like")
        words = head.split()
        words = [PLURAL.get(x, x) for x in words]
        head = " ".join(words)
        objs = list(enumerate(self.objs))
        if head == "shape":
            return {i for i, _ in objs}
        if head in CUES:
            return {i for i, o in objs if o["kind"] in CUES[head]}
        m = re.fullmatch(r"shape with the colour of (.+)", head)
        if m:
            return {i for i, o in objs if o["colour"] == THINGS[m[1]]}
        if len(words) == 2 and words[0] in COLOURS and words[1] == "shape":
            return {i for i, o in objs if o["colour"] == words[0]}
        if len(words) == 2 and words[0] in COLOURS and words[1] in CORNERS:
            return {i for i, o in objs if o["colour"] == words[0] and o["kind"] == words[1]}
        if len(words) == 1 and words[0] in CORNERS:
            return {i for i, o in objs if o["kind"] == words[0]}
        raise AssertionError(f"unreadable head {head!r}")

    def extreme(self, values, group, lead, ratio=False):
        order = sorted(group, key=lambda i: -values[i])
        assert len(order) >= 2, "a superlative over one object"
        a, b = values[order[0]], values[order[1]]
        assert (a >= lead * b) if ratio else (a - b >= lead), "superlative without a clear winner"
        return {order[0]}

    def denote(self, expr):
        m = re.fullmatch(r"(the|all the) (.+) (left of|right of|above|below) (the .+)", expr)
        if m:
            anchor = self.denote(m[4])
            if not anchor:
                return set()
            (a,) = anchor
            group = self.members(m[2]) - {a}
            axis, sign = SIDES[m[3]]
            d = {i: sign * (self.centroid[i, axis] - self.centroid[a, axis]) for i in group}
            assert all(abs(v) >= self.margin for v in d.values()), "a member on the anchor's line"
            side = {i for i, v in d.items() if v > 0}
            if m[1] == "the":
                assert len(side) == 1 and len(group) >= 2
            else:
                assert len(side) >= 2
            return side
        m = re.fullmatch(r"the (largest|smallest) (.+)", expr)
        if m:
            sign = 1 if m[1] == "largest" else -1
            return self.extreme(self.area ** sign, self.members(m[2]), 1.25, ratio=True)
        m = re.fullmatch(r"the (.+) nearest the (top|bottom|left edge|right edge)", expr)
        if m:
            axis, sign = EDGES[m[2]]
            return self.extreme(sign * self.centroid[:, axis], self.members(m[1]), self.margin)
        m = re.fullmatch(r"the shape with the same colour as the (\w+)", expr)
        if m:
            (a,) = self.members(m[1])
            return {i for i, o in enumerate(self.objs) if i != a and o["colour"] == self.objs[a]["colour"]}
        m = re.fullmatch(r"all the (.+)", expr)
        if m:
            found = self.members(m[1])
            assert len(found) != 1
            return found
        m = re.fullmatch(r"the (.+)", expr)
        found = self.members(m[1])
        assert len(found) <= 1, f"{expr!r} fits {len(found)} objects"
        return found


@pytest.fixture(scope="module")
def scenes():
    """100 val samples (20 per tier), each with its oracle scene."""
    ds = SyntheticReasonSeg("val", size=100)
    return [(s, oracle_scene(s)) for s in ds]


@pytest.fixture(scope="module")
def samples(scenes):
    return [s for s, _ in scenes]


# ---- rasterisers against geometry ------------------------------------------------------------
@pytest.mark.parametrize("side", [1, 2, 7, 32, 101])
def test_square_and_bar_pixel_counts(side):
    assert rect_raster(3, 5, side, side)[2].sum() == side * side
    assert rect_raster(0, 0, side, 3 * side)[2].sum() == 3 * side * side


@pytest.mark.parametrize("length,thickness", [(5, 1), (9, 3), (30, 10), (41, 13)])
def test_cross_pixel_count(length, thickness):
    assert cross_raster(0, 0, length, thickness)[2].sum() == 2 * length * thickness - thickness ** 2
    with pytest.raises(ValueError, match="even"):
        cross_raster(0, 0, length, thickness + 1)


@pytest.mark.parametrize("r", [3.0, 7.3, 20.5, 64.9])
def test_disc_count_within_pixel_bound(r):
    rng = np.random.default_rng(int(r * 10))
    w = math.sqrt(2) / 2  # a counted pixel lies within w of the disc, an uncounted one outside r - w
    for cx, cy in rng.uniform(100, 200, size=(5, 2)):
        n = disc_raster(cx, cy, r)[2].sum()
        assert math.pi * (r - w) ** 2 <= n <= math.pi * (r + w) ** 2


def test_polygons_match_matplotlib_and_area_bound():
    rng = np.random.default_rng(3)
    for n, inner in [(3, 0.0), (5, 0.45), (4, 0.0)]:
        for _ in range(5):
            v = regular_polygon(*rng.uniform(50, 60, 2), rng.uniform(5, 40), n, rng.uniform(0, 6), inner)
            top, left, m = polygon_raster(v)
            yy, xx = np.mgrid[top:top + m.shape[0], left:left + m.shape[1]] + 0.5
            ref = Path(v).contains_points(np.stack([xx.ravel(), yy.ravel()], 1)).reshape(m.shape)
            np.testing.assert_array_equal(m, ref)
            x, y = v[:, 0], v[:, 1]
            area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
            perim = np.hypot(*(v - np.roll(v, -1, 0)).T).sum()
            if inner == 0:  # convex: |count - area| <= perimeter * w + pi w^2
                w = math.sqrt(2) / 2
                assert abs(m.sum() - area) <= perim * w + math.pi * w * w


# ---- the samples --------------------------------------------------------------------------------
def test_determinism_independent_of_order():
    a = SyntheticReasonSeg("train", size=12, seed=5)
    later = a[9]
    fresh = [SyntheticReasonSeg("train", size=12, seed=5)[i] for i in range(12)]
    for x, y in [(later, fresh[9]), (a[3], fresh[3])]:
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.target(), y.target())
        assert (x.query, x.instruction, x.answer, x.meta) == (y.query, y.instruction, y.answer, y.meta)
    assert a[-1].id == fresh[11].id == "synthetic/train/5/11"
    digests = {hashlib.sha1(s.image.tobytes()).hexdigest() for s in fresh}
    assert len(digests) == 12
    assert len({s.instruction for s in fresh}) > 6
    other_seed = SyntheticReasonSeg("train", size=12, seed=6)[9]
    assert other_seed.image.shape != later.image.shape or not np.array_equal(other_seed.image, later.image)


def test_splits_disjoint_fixed_and_prefix_stable():
    def digests(split, n, **kw):
        ds = SyntheticReasonSeg(split, size=n, **kw)
        return [hashlib.sha1(ds[i].image.tobytes()).hexdigest() for i in range(n)]

    train, val, test = digests("train", 40), digests("val", 40), digests("test", 40)
    assert not (set(train) & set(val)) and not (set(train) & set(test)) and not (set(val) & set(test))
    assert digests("val", 10) == val[:10]  # a smaller set is a prefix of a larger one
    assert digests("train", 10, seed=0) == train[:10]


def test_bad_arguments():
    for kw, msg in [({"split": "dev"}, "split"), ({"size": -1}, "size"), ({"split": "val", "seed": 1}, "fixed"),
                    ({"seed": -2}, "seed"), ({"tiers": ["fun"]}, "tiers"), ({"tiers": []}, "tiers")]:
        with pytest.raises(ValueError, match=msg):
            SyntheticReasonSeg(**kw)
    ds = SyntheticReasonSeg("test", size=3)
    with pytest.raises(IndexError):
        ds[3]
    assert len(list(ds)) == 3 and ds.fingerprint()["split"] == "test"


def test_image_size_ranges():
    rng = np.random.default_rng(0)
    hw = np.array([image_size(rng) for _ in range(3000)])
    aspect = hw[:, 1] / hw[:, 0]
    assert hw.min() >= 128 and hw.max() <= 640
    assert aspect.min() >= 1 / 3 and aspect.max() <= 3
    assert aspect.min() < 0.37 and aspect.max() > 2.7 and hw.min() < 135 and hw.max() > 600


def test_sample_contract(samples):
    tiers = [s.meta["tier"] for s in samples]
    assert tiers == [TIERS[i % len(TIERS)] for i in range(len(samples))]
    for s in samples:
        h, w = s.meta["height"], s.meta["width"]
        assert s.image.shape == (h, w, 3) and s.image.dtype == np.uint8
        assert 128 <= min(h, w) and max(h, w) <= 640 and 1 / 3 <= w / h <= 3
        assert load_image(s.image) is not None
        mask = s.target()
        assert mask.shape == (h, w) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        assert 2 <= len(s.meta["objects"]) <= 6
        assert s.answer == (ANSWER if s.has_target else REFUSAL)
        assert ("[SEG]" in s.answer) == s.has_target == (s.meta["tier"] != "false_premise")
        assert s.query in s.instruction and instruction_for(s) == s.instruction
        assert s.instruction[0].isupper() and s.instruction.endswith((".", "?"))
        if not s.has_target:
            assert mask.sum() == 0 and s.meta["targets"] == []


def test_masks_equal_independent_painting(scenes):
    occluded = 0
    for s, (full, visible, _, _) in scenes:
        for o, f, v in zip(s.meta["objects"], full, visible):
            assert f.sum() == o["area"]
            assert v.sum() == o["visible_area"]
            assert o["visible_area"] >= max(MIN_VISIBLE_PIXELS, MIN_VISIBLE_FRACTION * o["area"])
            # the object's colour is what the image shows there (fine noise of at most 12 levels)
            assert np.abs(s.image[v].astype(int) - np.array(o["rgb"])).max() <= 12
            occluded += o["visible_area"] < o["area"]
        union = np.zeros(s.image.shape[:2], dtype=np.uint8)
        for t in s.meta["targets"]:
            union |= visible[t]
        np.testing.assert_array_equal(s.target(), union)
    assert occluded >= 8  # occlusion happens, and the visible areas above are then exact


def test_same_colour_objects_do_not_touch(scenes):
    for s, (_, visible, _, _) in scenes:
        objs = s.meta["objects"]
        for i in range(len(objs)):
            grown = visible[i].copy()
            grown[1:] |= visible[i][:-1]
            grown[:-1] |= visible[i][1:]
            grown[:, 1:] |= visible[i][:, :-1]
            grown[:, :-1] |= visible[i][:, 1:]
            for j in range(i + 1, len(objs)):
                if objs[i]["colour"] == objs[j]["colour"]:
                    assert not (grown & visible[j]).any()


def test_every_query_denotes_exactly_its_targets(scenes):
    seen = set()
    for s, oracle in scenes:
        denoted = Reading(s, oracle).denote(s.query)
        assert denoted == set(s.meta["targets"]), (s.id, s.instruction)
        tier = s.meta["tier"]
        seen.add((tier, s.meta["family"]))
        if tier == "false_premise":
            assert not denoted
        elif tier == "multi":
            assert len(denoted) >= 2
        else:
            assert len(denoted) == 1
        if tier == "relational":
            assert re.search(r"left of|right of|above|below|largest|smallest", s.query)
    assert {t for t, _ in seen} == set(TIERS)
    assert len(seen) >= 18  # most query families appear in 100 samples


def test_false_premises_describe_nothing_in_the_scene():
    families = set()
    for s in SyntheticReasonSeg("train", size=150, seed=2, tiers=["false_premise"]):
        families.add(s.meta["family"])
        assert Reading(s).denote(s.query) == set(), s.instruction
        assert not s.has_target and s.answer == REFUSAL and "[SEG]" not in s.answer
        assert s.target().sum() == 0
    assert families == {"colour", "colour_kind", "kind", "plural", "relation", "shape_cue"}


def test_relations_hold_by_centroid():
    ds = SyntheticReasonSeg("train", size=60, seed=1, tiers=["relational"])
    relations = 0
    for s in ds:
        if s.meta["family"] != "relation":
            continue
        relations += 1
        _, _, _, c = oracle_scene(s)
        (t,), a = s.meta["targets"], s.meta["anchor"]
        if " left of " in s.query:
            assert c[t, 0] < c[a, 0]
        if " right of " in s.query:
            assert c[t, 0] > c[a, 0]
        if " above " in s.query:
            assert c[t, 1] < c[a, 1]
        if " below " in s.query:
            assert c[t, 1] > c[a, 1]
    assert relations >= 10


def test_vocabulary_is_closed(samples):
    assert list(VOCABULARY) == sorted(set(VOCABULARY))
    assert all(w == w.lower() or w == "[SEG]" for w in VOCABULARY)
    assert set(COLOURS) | set(CORNERS) | set(PLURAL) <= set(VOCABULARY)
    assert len(VOCABULARY) < 120
    used = set()
    for s in samples:
        words = split_words(s.instruction) + split_words(s.answer)
        assert set(words) <= set(VOCABULARY), set(words) - set(VOCABULARY)
        used.update(words)
    assert len(used) > 0.6 * len(VOCABULARY)
    assert split_words("Sure, [SEG].") == ["sure", ",", "[SEG]", "."]
