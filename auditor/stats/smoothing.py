"""From a lower bound on the smoothed score to guarantees under weight changes.

The smoothed score is g(theta) = E_eps S(theta + eps), eps ~ N(0, sigma^2 I), S in [0, 1]. For any
change Delta of the perturbed parameters (randomized smoothing, Salman et al. / Levine & Feizi style):

* strong theorem: g(theta + Delta) >= Phi(Phi^-1(g(theta)) - ||Delta||_2 / sigma);
* weak theorem:   g(theta + Delta) >= g(theta) - ||Delta||_2 / (sqrt(2 pi) sigma).

Both right-hand sides increase with g(theta), so substituting a (1 - alpha) lower confidence bound
p_lower for g(theta) keeps the statement true with probability >= 1 - alpha. Everything here is
deterministic arithmetic on p_lower; the probability comes from the bound that produced it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm

__all__ = [
    "bound_curve",
    "certified_radius",
    "certified_score",
    "strong_bound",
    "token_delta_norm",
    "weak_bound",
    "weak_radius",
    "worst_case_token_delta_norm",
]

# Largest float below 1: Phi^-1 of it is finite (~8.2), so p_lower = 1 gives a finite, usable curve.
_P_MAX = float(np.nextafter(1.0, 0.0))
_SQRT_2PI = math.sqrt(2.0 * math.pi)


def _check_p(p: float | np.ndarray, name: str = "p_lower") -> np.ndarray:
    arr = np.asarray(p, dtype=float)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0.0) or np.any(arr > 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {p!r}")
    return arr


def _check_sigma(sigma: float) -> float:
    s = float(sigma)
    if not (math.isfinite(s) and s > 0.0):
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    return s


def _check_norm(delta_norm: float | np.ndarray) -> np.ndarray:
    arr = np.asarray(delta_norm, dtype=float)
    if np.any(np.isnan(arr)) or np.any(arr < 0.0):
        raise ValueError(f"delta_norm must be >= 0, got {delta_norm!r}")
    return arr


def _check_q(q: float) -> float:
    v = float(q)
    if not 0.0 < v < 1.0:
        raise ValueError(f"target q must be in (0, 1), got {q!r}")
    return v


def _out(arr: np.ndarray) -> float | np.ndarray:
    return float(arr) if arr.ndim == 0 else arr


def strong_bound(p_lower: float | np.ndarray, delta_norm: float | np.ndarray, sigma: float) -> float | np.ndarray:
    """Phi(Phi^-1(p_lower) - ||Delta|| / sigma), vectorised over delta_norm (and p_lower).

    Guarantee: if g(theta) >= p_lower, then g(theta + Delta) >= returned value for every Delta of
    norm delta_norm (strong randomized-smoothing theorem). p_lower = 0 gives 0; p_lower = 1 is
    treated as the largest float below 1.
    """
    p = np.minimum(_check_p(p_lower), _P_MAX)
    d, s = _check_norm(delta_norm), _check_sigma(sigma)
    with np.errstate(divide="ignore"):
        val = norm.cdf(norm.ppf(p) - d / s)  # ppf(0) = -inf -> cdf = 0
    return _out(np.where(p <= 0.0, 0.0, val))


def weak_bound(p_lower: float | np.ndarray, delta_norm: float | np.ndarray, sigma: float) -> float | np.ndarray:
    """max(0, p_lower - ||Delta|| / (sqrt(2 pi) sigma)), vectorised over delta_norm (and p_lower).

    Guarantee: if g(theta) >= p_lower, then g(theta + Delta) >= returned value for every Delta of
    norm delta_norm (weak theorem: g is (1 / (sqrt(2 pi) sigma))-Lipschitz). Never above strong_bound.
    """
    p = _check_p(p_lower)
    d, s = _check_norm(delta_norm), _check_sigma(sigma)
    return _out(np.maximum(0.0, p - d / (_SQRT_2PI * s)))


def certified_score(p_lower: float | np.ndarray, delta_norm: float | np.ndarray, sigma: float) -> float | np.ndarray:
    """The better of the two theorems' bounds on g(theta + Delta).

    Guarantee: if g(theta) >= p_lower, then g(theta + Delta) >= returned value for every Delta of
    norm delta_norm. The strong bound always wins mathematically (its slope in ||Delta|| is
    -phi(.)/sigma >= -1/(sqrt(2 pi) sigma)); the max only guards against rounding.
    """
    return _out(np.maximum(strong_bound(p_lower, delta_norm, sigma), weak_bound(p_lower, delta_norm, sigma)))


def certified_radius(p_lower: float | np.ndarray, q: float, sigma: float) -> float | np.ndarray:
    """sigma (Phi^-1(p_lower) - Phi^-1(q)) when p_lower > q, else 0.

    Guarantee: if g(theta) >= p_lower, then g(theta + Delta) >= q for every ||Delta||_2 <= returned
    radius (the radius solves strong_bound(p_lower, R, sigma) = q).
    """
    p = np.minimum(_check_p(p_lower), _P_MAX)
    qq, s = _check_q(q), _check_sigma(sigma)
    with np.errstate(divide="ignore"):
        r = s * (norm.ppf(p) - norm.ppf(qq))
    return _out(np.where(p > qq, r, 0.0))


def weak_radius(p_lower: float | np.ndarray, q: float, sigma: float) -> float | np.ndarray:
    """sqrt(2 pi) sigma (p_lower - q) when p_lower > q, else 0.

    Guarantee: if g(theta) >= p_lower, then g(theta + Delta) >= q for every ||Delta||_2 <= returned
    radius (weak theorem). Never larger than certified_radius: by the mean value theorem
    Phi^-1(p) - Phi^-1(q) = (p - q) / phi(z) for some z, and 1 / phi(z) >= sqrt(2 pi).
    """
    p = _check_p(p_lower)
    qq, s = _check_q(q), _check_sigma(sigma)
    return _out(np.maximum(0.0, _SQRT_2PI * s * (p - qq)))


def bound_curve(p_lower: float, sigma: float, radii: list[float] | np.ndarray) -> dict[str, list[float]]:
    """The certified score as a function of ||Delta||: what a certificate plots.

    Keys "delta_norm", "strong", "weak" (lists of floats, same length as radii). Guarantee: if
    g(theta) >= p_lower, then for each i, g(theta + Delta) >= strong[i] >= weak[i] whenever
    ||Delta|| <= delta_norm[i] (both bounds decrease in ||Delta||).
    """
    r = _check_norm(np.asarray(radii, dtype=float).ravel())
    strong = np.atleast_1d(strong_bound(p_lower, r, sigma))
    weak = np.atleast_1d(weak_bound(p_lower, r, sigma))
    return {
        "delta_norm": [float(v) for v in r],
        "strong": [float(v) for v in strong],
        "weak": [float(v) for v in weak],
    }


# --------------------------------------------------------------------------- token substitutions


def _check_embedding(embedding: np.ndarray) -> np.ndarray:
    e = np.asarray(embedding)
    if e.ndim != 2 or e.shape[0] == 0:
        raise ValueError(f"embedding must be a 2-D (vocab, dim) matrix, got shape {e.shape}")
    return e


def _check_token(t: int, vocab: int) -> int:
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= int(t) < vocab:
        raise ValueError(f"token id {t!r} is not a row of the embedding (vocab size {vocab})")
    return int(t)


def token_delta_norm(embedding: np.ndarray, pairs: list[tuple[int, int]]) -> float:
    """sqrt(sum_i ||E[t_i] - E[t'_i]||^2) for substitutions t_i -> t'_i of distinct tokens t_i.

    Guarantee: this is the L2 norm of the change of the (noised) embedding parameters when every
    occurrence of t_i becomes t'_i, so strong_bound(p_lower, this, sigma) bounds the smoothed score
    after the substitution. Raises ValueError when a replaced token t_i repeats: the theorem needs
    distinct replaced tokens (one row changed once each).
    """
    e = _check_embedding(embedding)
    vocab = e.shape[0]
    olds = [_check_token(a, vocab) for a, _ in pairs]
    news = [_check_token(b, vocab) for _, b in pairs]
    seen: set[int] = set()
    for t in olds:
        if t in seen:
            raise ValueError(f"token {t} is replaced more than once; replaced tokens must be distinct")
        seen.add(t)
    if not olds:
        return 0.0
    diff = e[olds].astype(np.float64) - e[news].astype(np.float64)
    return float(math.sqrt(float(np.sum(diff * diff))))


def _max_row_distances(e: np.ndarray, rows: np.ndarray, chunk: int = 128) -> np.ndarray:
    """max_b ||e[a] - e[b]|| over all rows b, for each a in rows (exact, chunked matmul)."""
    sq = np.einsum("ij,ij->i", e, e)
    out = np.empty(rows.size)
    for s in range(0, rows.size, chunk):
        a = rows[s : s + chunk]
        d2 = sq[a, None] + sq[None, :] - 2.0 * (e[a] @ e.T)
        out[s : s + chunk] = np.sqrt(np.maximum(d2.max(axis=1), 0.0))
    return out


def worst_case_token_delta_norm(embedding: np.ndarray, candidates: list[int] | None, k: int) -> float:
    """The largest token_delta_norm over all substitutions of k distinct tokens.

    Each replaced token comes from `candidates` (all rows when None), each new token is any row.
    Equals sqrt of the sum of the k largest values of M(a)^2, M(a) = max_b ||E[a] - E[b]||.
    Guarantee: every such substitution has token_delta_norm <= returned value, so
    strong_bound(p_lower, returned value, sigma) holds for all of them at once.
    """
    e = _check_embedding(embedding).astype(np.float64)
    vocab = e.shape[0]
    if candidates is None:
        cand = np.arange(vocab)
    else:
        cand = np.unique(np.array([_check_token(t, vocab) for t in candidates], dtype=np.int64))
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    if k > cand.size:
        raise ValueError(f"k = {k} distinct tokens requested but only {cand.size} candidate(s)")
    if k == 0:
        return 0.0
    # Distances do not change under a shift; centring keeps the ||a||^2 + ||b||^2 - 2ab form accurate.
    c = e - e.mean(axis=0)
    radius = np.sqrt(np.einsum("ij,ij->i", c, c))
    # Exact distances to the `probe` rows farthest from the centre give a lower bound L(a) on M(a);
    # every other row b has ||b|| <= rho, so ||a - b|| <= ||a|| + rho bounds the rest. A full
    # vocab x vocab pass is needed only for rows where that bound beats L(a) and could reach the
    # top k: on real embedding matrices (few far-out rows) almost none.
    order = np.argsort(-radius, kind="stable")
    probe = order[: min(256, vocab)]
    rho = float(radius[order[probe.size]]) if probe.size < vocab else 0.0
    sq = radius**2
    lower = np.empty(cand.size)
    for s in range(0, cand.size, 4096):
        a = cand[s : s + 4096]
        d2 = sq[a, None] + sq[None, probe] - 2.0 * (c[a] @ c[probe].T)
        lower[s : s + 4096] = np.sqrt(np.maximum(d2.max(axis=1), 0.0))
    tail = (radius[cand] + rho) * (1.0 + 1e-12) + 1e-12  # margin: the bound must not lose to rounding
    tau = np.partition(lower, cand.size - k)[cand.size - k]  # k-th largest lower bound
    unsure = np.flatnonzero((tail > lower) & (tail >= tau))
    best = lower.copy()  # exact where tail <= lower; below tau (hence irrelevant) elsewhere
    if unsure.size:
        best[unsure] = _max_row_distances(c, cand[unsure])
    top = np.partition(best, cand.size - k)[cand.size - k :]
    return float(math.sqrt(float(np.sum(top * top))))
