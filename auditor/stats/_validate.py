"""Input checks shared by every bound: one clear ValueError naming what is wrong."""

from __future__ import annotations

import numpy as np


def check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not 0.0 < a < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    return a


def check_rows(x: np.ndarray | list[float], min_n: int, name: str = "x") -> np.ndarray:
    """A float array whose last axis is the sample; values must be finite and in [0, 1]."""
    arr = np.asarray(x, dtype=float)
    if arr.ndim == 0:
        raise ValueError(f"{name} must be a 1-D array of scores, got a scalar")
    if arr.shape[-1] < min_n:
        raise ValueError(f"{name} needs at least {min_n} value(s), got {arr.shape[-1]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if np.any(arr < 0.0) or np.any(arr > 1.0):
        raise ValueError(f"{name} must lie in [0, 1] (min {arr.min():g}, max {arr.max():g})")
    return arr


def check_sample(x: np.ndarray | list[float], min_n: int) -> np.ndarray:
    arr = check_rows(x, min_n)
    if arr.ndim != 1:
        raise ValueError(f"x must be 1-D, got shape {arr.shape}")
    return arr


def check_binary(x: np.ndarray) -> None:
    if not np.all((x == 0.0) | (x == 1.0)):
        raise ValueError(
            "clopper-pearson needs 0/1 outcomes; these scores are fractional. Use randomised_rounding, "
            "or a bounded-mean bound (star-bets, betting, hoeffding, empirical-bernstein)"
        )


def check_counts(k: int, n: int) -> tuple[int, int]:
    for name, v in (("k", k), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {v!r}")
    k, n = int(k), int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, n] = [0, {n}], got {k}")
    return k, n


def check_u(u: float | np.ndarray, rows: int) -> np.ndarray:
    """The randomisation of a randomised bound: one value in (0, 1] per row (1 = deterministic)."""
    arr = np.broadcast_to(np.asarray(u, dtype=float), (rows,))
    if not np.all((arr > 0.0) & (arr <= 1.0)):
        raise ValueError(f"u must lie in (0, 1], got {u!r}")
    return arr
