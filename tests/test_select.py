"""select_points per provider (reference, torch, triton) against select_points_ref (literal),
plus properties and bad inputs. The triton provider is the selection the fused kernel of
similarity_as_points computes (its discrete points and labels)."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from core_cases import (
    ALL,
    CASES,
    FAST,
    TRITON_CASES,
    Case,
    exact_selection,
    fresh_interpreter_test,
    near_tie,
    provider_case_params,
    select_with,
)
from sasp import READ_7B, READ_13B, SasPConfig, select_points, select_points_ref
from sasp.ops.select import SelectOutput


@pytest.mark.parametrize("provider,case", provider_case_params({"torch": CASES, "triton": TRITON_CASES}))
def test_matches_reference(provider, case):
    sim = case.sim.float()
    points, labels = select_with(provider)(sim, case.hw, case.cfg)
    ref_points, ref_labels = select_points_ref(sim, case.hw, case.cfg)
    assert points.dtype == labels.dtype == torch.int64
    assert points.shape == (len(case.hw), case.cfg.num_points, 2)
    strict = provider != "triton" or exact_selection(case)
    side = math.isqrt(sim.shape[1])
    for row in range(len(case.hw)):
        same = torch.equal(points[row], ref_points[row]) and torch.equal(labels[row], ref_labels[row])
        assert same or (not strict and near_tie(case.sim[row], case.cfg, (side, side))), f"row {row}"


def test_returns_named_tuple():
    out = select_points(torch.randn(2, 576), [(48, 64)] * 2)
    ref = select_points_ref(torch.randn(2, 576), [(48, 64)] * 2)
    assert isinstance(out, SelectOutput) and isinstance(ref, SelectOutput)
    points, labels = out
    assert points is out.points and labels is out.labels


@pytest.mark.parametrize("cfg", [READ_7B, READ_13B, READ_7B.replace(geometry="pad_square")], ids=["7b", "13b", "pad_square"])
def test_batch_equals_rows(cfg):
    sim = torch.randn(5, 576)
    hw = [(480, 640), (1, 1), (1080, 1920), (13, 500), (333, 333)]
    points, labels = select_points(sim, hw, cfg)
    for i in range(5):
        p, l = select_points(sim[i : i + 1], [hw[i]], cfg)
        assert torch.equal(points[i : i + 1], p) and torch.equal(labels[i : i + 1], l)


def _grid(sim, cfg):
    side = math.isqrt(sim.shape[-1])
    d = side // cfg.down_sample
    g = F.interpolate(sim.float().view(-1, 1, side, side), (d, d), mode="bilinear", align_corners=False).flatten(1)
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    return ((g - lo) / (hi - lo)).view(-1, d, d)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    cell=st.integers(1, 40),
    cfg=st.sampled_from([READ_7B, READ_13B, READ_7B.replace(num_points=7), READ_7B.replace(t_pos=0.5, t_neg=0.4)]),
    scale=st.sampled_from([1e-4, 1.0, 1e4]),
)
def test_properties(seed, cell, cfg, scale):
    """On square images whose side is a multiple of the grid, every cell is one pixel block:
    points map back to cells, so labels and order can be checked against the thresholds."""
    gen = torch.Generator().manual_seed(seed)
    sim = torch.randn(2, 576, generator=gen) * scale
    d = 24 // cfg.down_sample
    hw = [(d * cell, d * cell)] * 2
    points, labels = select_points(sim, hw, cfg)
    again = select_points(sim, hw, cfg)
    assert torch.equal(points, again[0]) and torch.equal(labels, again[1])  # deterministic
    assert ((points >= 0) & (points < torch.tensor(hw)[:, None].flip(-1))).all()  # inside (x < W, y < H)
    g = _grid(sim, cfg)
    for row in range(2):
        vals = g[row][points[row, :, 1] // cell, points[row, :, 0] // cell]
        lab = labels[row]
        assert (vals[lab == 1] >= cfg.t_pos).all()
        assert (vals[lab == 0] <= cfg.t_neg).all()
        assert ((vals[lab == -1] > cfg.t_neg) & (vals[lab == -1] < cfg.t_pos)).all()
        # positives first, then negatives, then neutrals
        rank = torch.tensor([0 if v == 1 else 1 if v == 0 else 2 for v in lab.tolist()])
        assert torch.equal(rank, rank.sort().values)
        assert (vals[lab == 1].diff() <= 0).all()  # highest first
        assert (vals[lab == 0].diff() >= 0).all()  # lowest first
        n_pos = int((g[row] >= cfg.t_pos).sum())
        n_neg = int((g[row] <= cfg.t_neg).sum())
        assert int((lab == 1).sum()) == min(cfg.num_points, n_pos)
        assert int((lab == 0).sum()) == min(cfg.num_points - min(cfg.num_points, n_pos), n_neg)
        assert len(set(map(tuple, points[row].tolist()))) == cfg.num_points  # distinct cells


@pytest.mark.parametrize("provider", ALL)
def test_constant_map_gives_neutral_points(provider):
    sim = torch.full((2, 576), 3.0)
    points, labels = select_with(provider)(sim, [(100, 200)] * 2)
    assert (labels == -1).all() and points.shape == (2, 30, 2)
    ref_points, ref_labels = select_points_ref(sim, [(100, 200)] * 2)
    assert torch.equal(points, ref_points) and torch.equal(labels, ref_labels)


@pytest.mark.parametrize("provider", ALL)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_raises_naming_row(provider, bad):
    sim = torch.randn(4, 576)
    sim[2, 17] = bad
    with pytest.raises(ValueError, match="row 2"):
        select_with(provider)(sim, [(10, 10)] * 4)


@pytest.mark.parametrize("provider", ALL)
def test_non_square_tokens(provider):
    select = select_with(provider)
    with pytest.raises(ValueError, match="perfect square"):
        select(torch.randn(1, 575), [(10, 10)])
    sim = torch.randn(1, 24 * 30)
    points, labels = select(sim, [(300, 400)], None, (24, 30))
    ref = select_points_ref(sim, [(300, 400)], grid_hw=(24, 30))
    assert points.shape == ref[0].shape == (1, 30, 2)
    if exact_selection(Case("", sim, [(300, 400)], READ_7B, (24, 30))) or provider != "triton":
        assert torch.equal(points, ref[0]) and torch.equal(labels, ref[1])
    with pytest.raises(ValueError, match="does not hold"):
        select(torch.randn(1, 576), [(10, 10)], None, (20, 20))


@pytest.mark.parametrize("provider", ALL)
@pytest.mark.parametrize("hw", [(0, 10), (10, -1), (-5, -5)])
def test_bad_image_size(provider, hw):
    with pytest.raises(ValueError, match="must be positive"):
        select_with(provider)(torch.randn(2, 576), [(10, 10), hw])


@pytest.mark.parametrize("provider", ALL)
def test_bad_shapes(provider):
    select = select_with(provider)
    with pytest.raises(ValueError, match=r"\[M, N_p\]"):
        select(torch.randn(576), [(10, 10)])
    with pytest.raises(ValueError, match=r"\[2, 2\]"):
        select(torch.randn(2, 576), [(10, 10)] * 3)
    with pytest.raises(ValueError, match="no cell"):
        select(torch.randn(1, 16), [(10, 10)], SasPConfig(down_sample=8))


@pytest.mark.parametrize("provider", ALL)
def test_fewer_cells_than_points_padded(provider):
    cfg = SasPConfig(down_sample=8)  # 3 x 3 = 9 cells < 30 points
    sim = torch.randn(2, 576)
    points, labels = select_with(provider)(sim, [(90, 90), (90, 300)], cfg)
    assert points.shape == (2, 30, 2) and labels.shape == (2, 30)
    assert (labels[:, 9:] == -1).all() and (points[:, 9:] == 0).all()
    ref = select_points_ref(sim, [(90, 90), (90, 300)], cfg)
    assert ref[0].shape == points.shape
    if provider != "triton" or not exact_selection(Case("", sim, [], cfg)):
        return
    assert torch.equal(points, ref[0]) and torch.equal(labels, ref[1])


@pytest.mark.parametrize("provider", ALL)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_low_and_high_precision_inputs(provider, dtype):
    """Every provider selects in float32, whatever the similarity's dtype."""
    sim = torch.randn(3, 576).to(dtype)
    points, labels = select_with(provider)(sim, [(480, 640)] * 3)
    ref = select_points(sim.float(), [(480, 640)] * 3)
    assert torch.equal(points, ref[0]) and torch.equal(labels, ref[1])


@pytest.mark.parametrize("provider", ALL)
def test_empty_batch(provider):
    points, labels = select_with(provider)(torch.zeros(0, 576), torch.zeros(0, 2, dtype=torch.long))
    assert points.shape == (0, 30, 2) and labels.shape == (0, 30)


@pytest.mark.parametrize("provider", FAST)
def test_coordinates_round_like_the_reference_beyond_float32_integers(provider):
    """A 1 x 40M image pads the 1 x 4 grid by ~2e7 cells: float32 cannot hold cell + 0.5 there,
    so the order of the roundings, float(cell + pad) + 0.5, must be READ's."""
    cfg = READ_7B.replace(num_points=4)
    for seed in range(3):
        sim = torch.randn(1, 16, generator=torch.Generator().manual_seed(seed))
        points, labels = select_with(provider)(sim, [(1, 40_000_000)], cfg, (2, 8))
        ref_points, ref_labels = select_points_ref(sim, [(1, 40_000_000)], cfg, grid_hw=(2, 8))
        assert torch.equal(points, ref_points) and torch.equal(labels, ref_labels)


@pytest.mark.parametrize("provider", FAST)
def test_grid_cropped_away_raises_naming_the_row(provider):
    """center_crop's int(W * d / min(H, W)) can be 0 for a one-cell grid: no cell is left."""
    sim = torch.randn(2, 9)
    cfg = READ_7B.replace(down_sample=3)
    with pytest.raises(ValueError, match="row 1: the 1x1 grid covers no pixel"):
        select_with(provider)(sim, [(300, 300), (1467, 1429)], cfg, (3, 3))


@pytest.mark.parametrize("provider", ALL)
@pytest.mark.parametrize("hw", [[(float("inf"), 5)], [(1e20, 5)]])
def test_absurd_image_size_raises(provider, hw):
    with pytest.raises(ValueError, match="image_hw"):
        select_with(provider)(torch.randn(1, 576), hw)


@pytest.mark.parametrize("provider", FAST)
@pytest.mark.parametrize("cfg", [READ_13B, READ_7B], ids=["13b", "7b"])
def test_signed_zero_at_the_minimum(provider, cfg):
    """x - min is -0.0 for a -0.0 beside a +0.0 minimum: it is a negative of value 0, ordered
    with the +0.0 by flat index (its float32 bits alone would rank it first, as a positive)."""
    sim = torch.randn(1, 576, generator=torch.Generator().manual_seed(3)).abs()
    sim[0, [0, 1, 24, 25]] = 0.0
    sim[0, [5, 6, 29, 30]] = -0.0  # a whole 2x2 block, so that the 7b down-sampled grid has -0.0 too
    points, labels = select_with(provider)(sim, [(336, 336)], cfg)
    ref_points, ref_labels = select_points_ref(sim, [(336, 336)], cfg)
    assert torch.equal(points, ref_points) and torch.equal(labels, ref_labels)


test_triton_in_a_fresh_interpreter = fresh_interpreter_test(__file__)
