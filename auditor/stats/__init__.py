"""Statistics: confidence bounds on the smoothed score p_A, and what a bound on p_A guarantees.

Takes per-draw scores in [0, 1]. Gives lower and upper confidence bounds on their mean (this module's
exports, below) and, in `smoothing`, the randomized-smoothing formulas that turn p_lower into
guarantees under weight changes (strong and weak theorems, certified radii, token bounds).

Every bound here is one-sided: a lower bound at level alpha fails (exceeds the true mean) with
probability at most alpha, and so does an upper bound; using both at once fails with probability at
most 2 * alpha. Pure numpy/scipy so the statistics can be checked without the model stack.

Methods (policy `sampling.bound`):

* ``star-bets`` (default for fixed-n audits, ``fixed_n``): STaR-Bets, Voráček & Orabona (2025), a
  betting test re-planned for the draws left; near the information floor at small n. Valid for an n
  fixed in advance; randomised by a value u drawn from the certificate's seed (u = 1: deterministic).
* ``betting`` (sequential audits, ``confseq``): the predictable plug-in betting confidence sequence
  of Waudby-Smith & Ramdas (2023), averaged over four truncations; anytime-valid, so it may be read
  at a data-dependent stopping time.
* ``clopper-pearson``: exact for 0/1 outcomes only (the bernoulli design, or randomised rounding).
* ``hoeffding``: any iid [0, 1] values; ignores the variance.
* ``empirical-bernstein``: Maurer & Pontil (2009), Theorem 4.

Reported lower bounds never exceed the sample mean, nor upper bounds fall below it (a conservative
cap, so every guarantee is unchanged).
"""

from __future__ import annotations

from auditor.stats.classical import (
    bonferroni,
    clopper_pearson_lower,
    clopper_pearson_upper,
    empirical_bernstein_lower,
    empirical_bernstein_upper,
    hoeffding_lower,
    hoeffding_upper,
    randomised_rounding,
)
from auditor.stats.confseq import (
    BETTING_GRID_SIZE,
    BETTING_TRUNCATIONS,
    BettingSequence,
    betting_log_capital,
    betting_lower,
    betting_upper,
)
from auditor.stats.dispatch import (
    ANYTIME_VALID,
    BOUNDS,
    DEFAULT_FIXED_N,
    DEFAULT_SEQUENTIAL,
    RANDOMISED,
    Bound,
    batch_lower_bound,
    lower_bound,
    sequential_bound,
    upper_bound,
)
from auditor.stats.fixed_n import (
    STAR_GRID_SIZE,
    STAR_TRUNCATION,
    seeded_u,
    star_log_wealth_at,
    star_lower,
    star_upper,
)

__all__ = [
    "ANYTIME_VALID",
    "BETTING_GRID_SIZE",
    "BETTING_TRUNCATIONS",
    "BOUNDS",
    "DEFAULT_FIXED_N",
    "DEFAULT_SEQUENTIAL",
    "RANDOMISED",
    "STAR_GRID_SIZE",
    "STAR_TRUNCATION",
    "Bound",
    "BettingSequence",
    "batch_lower_bound",
    "betting_log_capital",
    "betting_lower",
    "betting_upper",
    "bonferroni",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "empirical_bernstein_lower",
    "empirical_bernstein_upper",
    "hoeffding_lower",
    "hoeffding_upper",
    "lower_bound",
    "randomised_rounding",
    "seeded_u",
    "sequential_bound",
    "star_log_wealth_at",
    "star_lower",
    "star_upper",
    "upper_bound",
]
