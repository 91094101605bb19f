"""The bounds by name, as a policy's `sampling.bound` chooses them."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from auditor.stats import classical, confseq, fixed_n
from auditor.stats._validate import check_alpha, check_rows, check_sample, check_u

RowsBound = Callable[[np.ndarray, float, np.ndarray], np.ndarray]


class Bound(NamedTuple):
    """A bound method: per-row lower/upper on a 2-D array (rows = independent samples).

    Each takes (x, alpha, u) with u one value in (0, 1] per row; only randomised methods use u.
    """

    lower_rows: RowsBound
    upper_rows: RowsBound
    min_n: int
    binary_only: bool
    randomised: bool = False


def _ignore_u(f: Callable[[np.ndarray, float], np.ndarray]) -> RowsBound:
    def rows(x: np.ndarray, alpha: float, u: np.ndarray) -> np.ndarray:
        return f(x, alpha)

    return rows


BOUNDS: dict[str, Bound] = {
    "clopper-pearson": Bound(_ignore_u(classical.cp_lower_rows), _ignore_u(classical.cp_upper_rows), 1, True),
    "hoeffding": Bound(
        _ignore_u(lambda x, a: classical.hoeffding_rows(x, a, upper=False)),
        _ignore_u(lambda x, a: classical.hoeffding_rows(x, a, upper=True)),
        1,
        False,
    ),
    "empirical-bernstein": Bound(
        _ignore_u(lambda x, a: classical.eb_rows(x, a, upper=False)),
        _ignore_u(lambda x, a: classical.eb_rows(x, a, upper=True)),
        2,
        False,
    ),
    "betting": Bound(_ignore_u(confseq.betting_lower_rows), _ignore_u(confseq.betting_upper_rows), 1, False),
    "star-bets": Bound(fixed_n.star_lower_rows, fixed_n.star_upper_rows, 1, False, randomised=True),
}

# Methods whose bounds stay valid when the number of draws depends on the data seen so far.
ANYTIME_VALID: frozenset[str] = frozenset({"betting"})
# Methods that use a Uniform(0, 1] value u drawn independently of the scores (u = 1: deterministic).
RANDOMISED: frozenset[str] = frozenset(name for name, b in BOUNDS.items() if b.randomised)
# The defaults: the tightest fixed-n bound, and the confidence sequence for sequential audits.
DEFAULT_FIXED_N = "star-bets"
DEFAULT_SEQUENTIAL = "betting"


def _method(method: str) -> Bound:
    try:
        return BOUNDS[method]
    except KeyError:
        raise ValueError(f"unknown bound {method!r}; choose one of {', '.join(sorted(BOUNDS))}") from None


def batch_lower_bound(method: str, x: np.ndarray, alpha: float, u: float | np.ndarray = 1.0) -> np.ndarray:
    """``lower_bound`` applied to every row of a 2-D array (rows are independent samples).

    Guarantee per row: with probability >= 1 - alpha over that row's draws, p >= the row's value,
    under the same conditions as ``lower_bound``. u: one value or one per row. Used by the
    coverage simulations.
    """
    spec = _method(method)
    arr = check_rows(x, spec.min_n)
    if arr.ndim != 2:
        raise ValueError(f"x must be 2-D (samples in rows), got shape {arr.shape}")
    uu = check_u(u, arr.shape[0])
    return np.asarray(spec.lower_rows(arr, check_alpha(alpha), uu), dtype=float)


def lower_bound(method: str, x: np.ndarray, alpha: float, u: float = 1.0) -> float:
    """Lower confidence bound on the mean of the scores x by ``method`` (a key of BOUNDS).

    Guarantee: with probability >= 1 - alpha over the draws, p >= returned value, for iid
    X_i in [0, 1] with mean p (X_i in {0, 1} for clopper-pearson, which raises ValueError on
    fractional scores). Only methods in ANYTIME_VALID keep this when n was chosen from the data.
    For methods in RANDOMISED, u must be 1 or a Uniform(0, 1] draw independent of the scores
    (``seeded_u``); other methods ignore it. Never above the sample mean.
    """
    spec = _method(method)
    arr = check_sample(x, spec.min_n)
    return float(spec.lower_rows(arr[None, :], check_alpha(alpha), check_u(u, 1))[0])


def upper_bound(method: str, x: np.ndarray, alpha: float, u: float = 1.0) -> float:
    """Upper confidence bound on the mean of the scores x by ``method`` (a key of BOUNDS).

    Guarantee: with probability >= 1 - alpha over the draws, p <= returned value, for iid
    X_i in [0, 1] with mean p (X_i in {0, 1} for clopper-pearson). Only methods in ANYTIME_VALID
    keep this when n was chosen from the data. u as for ``lower_bound`` (use a draw independent of
    the one given to the lower bound). Never below the sample mean.
    """
    spec = _method(method)
    arr = check_sample(x, spec.min_n)
    return float(spec.upper_rows(arr[None, :], check_alpha(alpha), check_u(u, 1))[0])


def sequential_bound(method: str) -> str | None:
    """The bound a sequential run of a policy with bound ``method`` uses: itself when anytime-valid,
    the confidence sequence in place of the fixed-n default, None when the policy's choice rules
    stopping out (a fixed-n bound the user picked explicitly)."""
    _method(method)
    if method in ANYTIME_VALID:
        return method
    return DEFAULT_SEQUENTIAL if method == DEFAULT_FIXED_N else None
