"""A fixed-n lower confidence bound near the information floor: STaR-Bets (Voráček & Orabona 2025).

For a number of draws n fixed before sampling. The test of "mean <= m" bets with a capital
W_t(m) = prod_{i<=t} (1 + lambda_i(m) (x_i - m)), and the bet is re-planned at every step for the
horizon that is left ("sequential target-recalculating", arXiv 2505.22422, Alg. 3): with
R_t = max(log(1/alpha) - log W_{t-1}(m), 0) still to earn in the n - t + 1 remaining draws,

    lambda_t(m) = min( sqrt(2 R_t / ((n - t + 1) S_t(m))),  c/m ),
    S_t(m)      = min( sum_{i<t} (x_i - m)^2 / (t - 1) + m n / (t - 1)^2,  m (1 - m) )   (t >= 2),
    S_1(m)      = m (1 - m),

S_t(m) being a regularised estimate of E(X - m)^2, capped by its largest value under mean m. Once
the target is reached the bet is zero, so the capital is kept. c = STAR_TRUNCATION < 1 keeps every
factor >= 1 - c > 0.

Guarantee. For every m, lambda_t(m) >= 0 depends only on x_1..x_{t-1} (and on m, n, alpha), so
under any distribution on [0, 1] with mean p <= m, E[W_n(m)] <= 1. Then P(W_n(m) >= u/alpha) <= alpha
both for u = 1 (Markov's inequality) and for u ~ Uniform(0, 1] independent of the draws (the
randomised Markov inequality, Ramdas & Manole 2023: P(u <= alpha W_n) = E min(1, alpha W_n)). A
grid point m is rejected when W_n(m) >= u/alpha. The bound is L = (first grid point not rejected)
minus one grid step, then capped at the sample mean. If L > p, the grid point just above p lies
below the first non-rejected one, so it was rejected although p <= it: probability <= alpha. No
monotonicity in m is needed, which is why every grid point is evaluated (O(n * grid) work).

So: with probability >= 1 - alpha over the draws (and over u when u is random), p >= returned value,
for iid X_i in [0, 1] with mean p and n fixed in advance. NOT anytime-valid: do not stop on it.
u = 1 gives the deterministic bound; the audit draws u from the certificate's seed, which makes the
bound reproducible and strictly tighter on average (the threshold 1/alpha shrinks to u/alpha).
"""

from __future__ import annotations

import math

import numpy as np

from auditor.stats._validate import check_alpha, check_rows, check_sample, check_u

# Bets against mean m are capped at c/m: a single score of 0 can cost at most log(1/(1 - c)).
STAR_TRUNCATION = 0.999
# Candidate means j / STAR_GRID_SIZE, j = 1..size; the reported bound is one step below the first
# one not rejected, so discretisation costs at most one step (~2.4e-4), always conservatively.
STAR_GRID_SIZE = 4096
# Rows x grid points evaluated at once (memory: a few arrays of this many float64).
_CHUNK_CELLS = 1 << 20


def star_log_wealth(x: np.ndarray, m: np.ndarray, alpha: float) -> np.ndarray:
    """log W_n(m) for every row of x (rows, n) and every candidate mean in m (G,): shape (rows, G).

    Guarantee: for iid X_i in [0, 1] with mean p <= m and n = x.shape[-1] fixed in advance,
    E[W_n(m)] <= 1, so P(log W_n(m) >= log(u/alpha)) <= alpha for u = 1 and for
    u ~ Uniform(0, 1] independent of the draws (not for another fixed u < 1).
    """
    rows, n = x.shape
    target = -math.log(alpha)
    mm = np.asarray(m, dtype=float)[None, :]
    var_cap = mm * (1.0 - mm)
    cap = STAR_TRUNCATION / mm
    log_w = np.zeros((rows, mm.shape[1]))
    s1 = np.zeros((rows, 1))  # running sums of x and x^2 give sum (x_i - m)^2 for every m at once
    s2 = np.zeros((rows, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        for t in range(n):  # t draws seen so far; this bet is for draw t + 1
            if t == 0:
                var = np.broadcast_to(var_cap, log_w.shape)
            else:
                second = (s2 - 2.0 * mm * s1 + t * mm * mm) / t
                var = np.minimum(np.maximum(second, 0.0) + mm * n / (t * t), var_cap)
            lam = np.sqrt(2.0 * np.maximum(target - log_w, 0.0) / ((n - t) * np.maximum(var, 1e-300)))
            lam = np.minimum(lam, cap)
            xt = x[:, t : t + 1]
            log_w += np.log1p(lam * (xt - mm))
            s1 += xt
            s2 += xt * xt
    return log_w


def star_lower_rows(
    x: np.ndarray, alpha: float, u: np.ndarray | float = 1.0, grid_size: int = STAR_GRID_SIZE
) -> np.ndarray:
    """STaR-Bets lower bound for every row of a 2-D array, capped at the row mean; u per row in (0, 1].

    Guarantee per row as in ``star_lower`` (for any grid size: a coarser grid, as `auditor plan` uses
    for its many simulated audits, only costs up to one step 1/grid_size of tightness).
    """
    rows = x.shape[0]
    uu = check_u(u, rows)
    grid = np.arange(1, grid_size + 1) / grid_size
    thr = -math.log(alpha) + np.log(uu)
    out = np.empty(rows)
    step = max(1, _CHUNK_CELLS // grid_size)
    for a in range(0, rows, step):
        b = min(rows, a + step)
        kept = star_log_wealth(x[a:b], grid, alpha) < thr[a:b, None]
        kept[:, -1] = True  # m = 1 is never rejected: every factor is <= 1 there
        first = np.argmax(kept, axis=1)
        out[a:b] = np.where(first > 0, grid[first] - 1.0 / grid_size, 0.0)
    return np.minimum(np.maximum(out, 0.0), x.mean(axis=-1))


def star_upper_rows(x: np.ndarray, alpha: float, u: np.ndarray | float = 1.0) -> np.ndarray:
    """Upper bound per row: 1 - star_lower_rows(1 - x)."""
    return 1.0 - star_lower_rows(1.0 - x, alpha, u)


def star_lower(x: np.ndarray, alpha: float, u: float = 1.0) -> float:
    """STaR-Bets lower confidence bound on the mean, for n = len(x) fixed before sampling.

    Guarantee: with probability >= 1 - alpha over the draws (and over u if it is random), p >=
    returned value, for iid X_i in [0, 1] with mean p, n fixed in advance, and u either 1
    (deterministic) or a Uniform(0, 1] draw independent of the scores (e.g. from the certificate's
    seed, see ``seeded_u``); a u picked after seeing the scores voids it. Never above mean(x). n >= 1.
    """
    arr = check_sample(x, 1)
    return float(star_lower_rows(arr[None, :], check_alpha(alpha), u)[0])


def star_upper(x: np.ndarray, alpha: float, u: float = 1.0) -> float:
    """STaR-Bets upper confidence bound: 1 - star_lower(1 - x, alpha, u).

    Guarantee: with probability >= 1 - alpha, p <= returned value, under the conditions of
    ``star_lower``. Never below mean(x).
    """
    arr = check_sample(x, 1)
    return float(star_upper_rows(arr[None, :], check_alpha(alpha), u)[0])


def star_log_wealth_at(x: np.ndarray, m: float, alpha: float) -> np.ndarray:
    """log W_n(m) per row of x (1-D or 2-D) at one candidate mean m in (0, 1]."""
    arr = check_rows(x, 1)
    alpha = check_alpha(alpha)
    if not 0.0 < m <= 1.0:
        raise ValueError(f"m must be in (0, 1], got {m!r}")
    rows = arr.reshape(-1, arr.shape[-1])
    return star_log_wealth(rows, np.array([float(m)]), alpha)[:, 0].reshape(arr.shape[:-1])


def seeded_u(rng: np.random.Generator) -> float:
    """The randomisation of ``star_lower``: a Uniform(0, 1] value (1 - rng.random()).

    Draw it from a generator seeded by the certificate's seed (and the task), never from the scores,
    and record it: anyone can then recompute the same bound.
    """
    return 1.0 - float(rng.random())
