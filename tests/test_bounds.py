"""Closed-form checks of the smoothing guarantees and the token-substitution norms in auditor.stats.smoothing."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import norm

from auditor.stats import smoothing

PS = [0.01, 0.3, 0.5, 0.62, 0.8, 0.97, 0.999999]
SIGMAS = [1e-3, 0.004, 0.5, 3.0]


@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("p", PS)
def test_strong_bound_at_zero_is_p(p: float, sigma: float) -> None:
    assert smoothing.strong_bound(p, 0.0, sigma) == pytest.approx(p, rel=1e-12)
    assert smoothing.weak_bound(p, 0.0, sigma) == p
    assert smoothing.certified_score(p, 0.0, sigma) == pytest.approx(p, rel=1e-12)


@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("q", [0.1, 0.5, 0.6, 0.9])
@pytest.mark.parametrize("p", PS)
def test_radius_inverts_strong_bound(p: float, q: float, sigma: float) -> None:
    r = smoothing.certified_radius(p, q, sigma)
    if p <= q:
        assert r == 0.0
        assert smoothing.weak_radius(p, q, sigma) == 0.0
    else:
        assert r == pytest.approx(sigma * (norm.ppf(p) - norm.ppf(q)), rel=1e-12)
        assert smoothing.strong_bound(p, r, sigma) == pytest.approx(q, rel=1e-9)
        rw = smoothing.weak_radius(p, q, sigma)
        assert rw == pytest.approx(math.sqrt(2 * math.pi) * sigma * (p - q), rel=1e-12)
        assert smoothing.weak_bound(p, rw, sigma) == pytest.approx(q, abs=1e-12)
        assert rw <= r * (1 + 1e-12)  # the strong radius always dominates


@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("p", [*PS, 0.0, 1.0])
def test_weak_dominated_by_strong_and_both_decrease(p: float, sigma: float) -> None:
    d = np.linspace(0, 6 * sigma, 200)
    strong = smoothing.strong_bound(p, d, sigma)
    weak = smoothing.weak_bound(p, d, sigma)
    assert isinstance(strong, np.ndarray) and strong.shape == d.shape
    assert np.all(weak <= strong + 1e-12)
    assert np.all(np.diff(strong) <= 1e-15) and np.all(np.diff(weak) <= 0)
    assert np.all((strong >= 0) & (strong <= 1)) and np.all(weak >= 0)
    assert np.array_equal(smoothing.certified_score(p, d, sigma), np.maximum(strong, weak))


def test_edge_probabilities() -> None:
    assert smoothing.strong_bound(0.0, 1.0, 1.0) == 0.0
    assert smoothing.strong_bound(0.0, 0.0, 1.0) == 0.0
    one = smoothing.strong_bound(1.0, 1.0, 1.0)
    assert 0.999 < one < 1.0 and math.isfinite(smoothing.certified_radius(1.0, 0.5, 1.0))
    assert smoothing.strong_bound(1.0, 1e6, 1.0) == 0.0
    assert smoothing.weak_bound(0.2, 10.0, 1.0) == 0.0
    assert smoothing.certified_radius(0.5, 0.5, 1.0) == 0.0


def test_bad_inputs_raise() -> None:
    for call in (
        lambda: smoothing.strong_bound(1.2, 0.0, 1.0),
        lambda: smoothing.strong_bound(0.5, -1.0, 1.0),
        lambda: smoothing.strong_bound(0.5, 0.0, 0.0),
        lambda: smoothing.weak_bound(-0.1, 0.0, 1.0),
        lambda: smoothing.certified_radius(0.8, 0.0, 1.0),
        lambda: smoothing.certified_radius(0.8, 1.0, 1.0),
        lambda: smoothing.weak_radius(0.8, 0.5, -2.0),
    ):
        with pytest.raises(ValueError):
            call()


def test_bound_curve() -> None:
    sigma, p = 0.004, 0.8
    radii = [sigma * s for s in (0, 0.25, 0.5, 1, 1.5, 2)]
    curve = smoothing.bound_curve(p, sigma, radii)
    assert set(curve) == {"delta_norm", "strong", "weak"}
    assert curve["delta_norm"] == radii
    assert all(isinstance(v, float) for key in curve for v in curve[key])
    assert curve["strong"][0] == pytest.approx(p) and curve["weak"][0] == p
    assert curve["strong"][3] == pytest.approx(norm.cdf(norm.ppf(p) - 1.0))
    assert curve["weak"][3] == pytest.approx(p - 1 / math.sqrt(2 * math.pi))
    assert all(w <= s + 1e-12 for s, w in zip(curve["strong"], curve["weak"], strict=True))


E = np.array(
    [
        [0.0, 0.0, 0.0],
        [1.0, 0.0, 0.0],
        [0.0, 2.0, 0.0],
        [1.0, 1.0, 1.0],
    ]
)


def test_token_delta_norm_by_hand() -> None:
    # rows 0 -> 1 (distance 1) and 2 -> 3 (distance sqrt(1 + 1 + 1) = sqrt(3))
    assert smoothing.token_delta_norm(E, [(0, 1), (2, 3)]) == pytest.approx(2.0)
    assert smoothing.token_delta_norm(E, [(1, 2)]) == pytest.approx(math.sqrt(5))
    assert smoothing.token_delta_norm(E, []) == 0.0
    # a replacement token may repeat; only the replaced ones must be distinct
    assert smoothing.token_delta_norm(E, [(0, 3), (1, 3)]) == pytest.approx(math.sqrt(3 + 2))


def test_token_delta_norm_rejects_repeated_or_unknown_tokens() -> None:
    with pytest.raises(ValueError, match="distinct"):
        smoothing.token_delta_norm(E, [(0, 1), (0, 2)])
    with pytest.raises(ValueError, match="not a row"):
        smoothing.token_delta_norm(E, [(0, 4)])
    with pytest.raises(ValueError, match="not a row"):
        smoothing.token_delta_norm(E, [(-1, 2)])


def _brute_force(emb: np.ndarray, candidates: list[int] | None, k: int) -> float:
    olds = range(len(emb)) if candidates is None else sorted(set(candidates))
    best = 0.0
    for chosen in itertools.combinations(olds, k):
        for news in itertools.product(range(len(emb)), repeat=k):
            best = max(best, smoothing.token_delta_norm(emb, list(zip(chosen, news, strict=True))))
    return best


@pytest.mark.parametrize("seed", range(4))
def test_worst_case_against_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((6, 4)) * rng.uniform(0.2, 3.0, size=(6, 1))
    for candidates in (None, [0, 2, 5], [4, 4, 1]):
        n_old = 6 if candidates is None else len(set(candidates))
        for k in range(0, min(n_old, 3) + 1):
            want = _brute_force(emb, candidates, k)
            assert smoothing.worst_case_token_delta_norm(emb, candidates, k) == pytest.approx(want, rel=1e-9)
    with pytest.raises(ValueError):
        smoothing.worst_case_token_delta_norm(emb, [0, 1], 3)
    with pytest.raises(ValueError):
        smoothing.worst_case_token_delta_norm(emb, [0, 9], 1)


@pytest.mark.parametrize("shape", [(700, 16), (300, 64)])
def test_worst_case_pruning_is_exact(shape: tuple[int, int]) -> None:
    # More rows than the probe set, with and without far-out rows: the pruned search must equal
    # the exact all-pairs maximum.
    rng = np.random.default_rng(shape[0])
    for outliers in (False, True):
        emb = rng.standard_normal(shape)
        if outliers:
            emb[rng.choice(shape[0], 20, replace=False)] *= 4.0
        diff = emb[:, None, :] - emb[None, :, :]
        per_row = np.sqrt((diff**2).sum(-1)).max(axis=1)
        for k in (1, 5, 50):
            want = math.sqrt(float(np.sum(np.sort(per_row)[-k:] ** 2)))
            assert smoothing.worst_case_token_delta_norm(emb, None, k) == pytest.approx(want, rel=1e-9)
        cand = list(range(0, shape[0], 3))
        want = math.sqrt(float(np.sum(np.sort(per_row[cand])[-4:] ** 2)))
        assert smoothing.worst_case_token_delta_norm(emb, cand, 4) == pytest.approx(want, rel=1e-9)
