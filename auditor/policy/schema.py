"""The audit policy: what to perturb, how to sample, which tasks, and what passes.

A policy is a YAML file validated by pydantic (unknown keys are errors, so a typo never silently
weakens an audit). `load_policy` turns every problem into one line naming the file and the field.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from auditor.errors import PolicyError
from auditor.policy.messages import error_lines
from auditor.policy.tasks import (
    ChoiceOracle,
    ContainsOracle,
    DataSource,
    ExactOracle,
    LmEvalOracle,
    LmEvalSource,
    NumericOracle,
    PythonOracle,
    RefusalOracle,
    TaskSpec,
    _Strict,
)
from auditor.resources import default_policy

SCHEMA_VERSION = 1
DEFAULT_POLICY = default_policy()
# Fewest draws each bound is defined for (stats.BOUNDS[...].min_n; a test keeps the two in step).
MIN_DRAWS = {"clopper-pearson": 1, "hoeffding": 1, "empirical-bernstein": 2, "betting": 1, "star-bets": 1}


class SigmaAuto(_Strict):
    """sigma chosen from the data: pilot draws pick it from a geometric range, fresh draws certify it."""

    auto: list[float] = Field(description="[lo, hi]: the range the candidates are spread over (geometrically).")
    pilot_draws: int = Field(8, ge=1, description="Pilot draws (n0) per candidate; never part of the bound.")
    candidates: int = Field(5, ge=2, description="Candidate sigmas tried by the pilot.")

    @model_validator(mode="after")
    def _range(self) -> SigmaAuto:
        if len(self.auto) != 2 or not 0 < self.auto[0] < self.auto[1] or not math.isfinite(self.auto[1]):
            raise ValueError(f"auto: expected [lo, hi] with 0 < lo < hi, got {self.auto}")
        return self

    def sigmas(self) -> list[float]:
        """The candidates: `candidates` sigmas spaced geometrically over [lo, hi] (radii scale with sigma),
        rounded to 12 significant digits so that 0.008 is not 0.008000000000000004."""
        return [float(f"{v:.12g}") for v in np.geomspace(self.auto[0], self.auto[1], self.candidates)]


class PerturbationSpec(_Strict):
    """Where the Gaussian noise goes and how large it is."""

    sigma: float | list[float] | SigmaAuto = Field(
        description="Per-coordinate noise std: a number; an ascending grid [s1, s2, ...] certified in order up to "
        "the first failure (fixed-sequence: the certified basin edge sigma*); or {auto: [lo, hi], pilot_draws, "
        "candidates}: pilot draws choose sigma, fresh draws certify it."
    )
    space: Literal["weights", "input-embeddings"] = Field(
        "weights",
        description="'weights': noise on the selected parameters (the paper's smoothing). "
        "'input-embeddings': iid noise on each position's input embedding (exact token certificates).",
    )
    include: list[str] = Field(["*"], description="Globs over parameter names to perturb.")
    exclude: list[str] = Field([], description="Globs over parameter names never perturbed.")
    scale: Literal["absolute", "relative"] = Field(
        "absolute",
        description="'absolute': the same std sigma on every coordinate. 'relative': std sigma * RMS(theta0_k) on "
        "tensor k, fixed from the base weights before any draw; radii are then in the whitened norm "
        "||Sigma^-1/2 Delta||_2 (anisotropic smoothing).",
    )

    @field_validator("sigma", mode="before")
    @classmethod
    def _sigma_shape(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("sigma: expected a number, an ascending list, or {auto: [lo, hi]}")
        if isinstance(v, int | float):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"sigma must be a positive number, got {v}")
            return float(v)
        if isinstance(v, list):
            if len(v) < 2 or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in v):
                raise ValueError(f"a sigma grid is a list of at least two numbers (one sigma is a number), got {v}")
            grid = [float(x) for x in v]
            if any(not (math.isfinite(x) and x > 0) for x in grid) or any(
                b <= a for a, b in zip(grid, grid[1:], strict=False)
            ):
                raise ValueError(f"a sigma grid must be positive and strictly ascending, got {v}")
            return grid
        if isinstance(v, dict | SigmaAuto):
            return v
        raise ValueError("sigma: expected a number, an ascending list, or {auto: [lo, hi]}")

    @model_validator(mode="after")
    def _relative_needs_weights(self) -> PerturbationSpec:
        if self.scale == "relative" and self.space != "weights":
            raise ValueError("scale: relative rescales weight tensors; it needs space: weights")
        if self.scale == "relative" and not isinstance(self.sigma, float):
            raise ValueError(
                "scale: relative needs a single sigma: whitened radii at different sigmas are in different units "
                "(use scale: absolute with a sigma grid or sigma: {auto: ...})"
            )
        return self

    @property
    def grid(self) -> list[float] | None:
        """The ascending sigma grid, or None."""
        return self.sigma if isinstance(self.sigma, list) else None

    @property
    def auto(self) -> SigmaAuto | None:
        """The sigma-from-the-data settings, or None."""
        return self.sigma if isinstance(self.sigma, SigmaAuto) else None

    @property
    def fixed_sigma(self) -> float:
        """The one sigma an audit runs at; a grid or auto policy must first be fixed with `at`."""
        if not isinstance(self.sigma, float):
            raise ValueError("perturbation.sigma is a search (grid or auto): pick one sigma with at(sigma) first")
        return self.sigma

    def search_sigmas(self) -> list[float]:
        """Every sigma an audit of this policy may run at (the grid, the auto candidates, or the one sigma)."""
        if isinstance(self.sigma, list):
            return list(self.sigma)
        if isinstance(self.sigma, SigmaAuto):
            return self.sigma.sigmas()
        return [self.sigma]

    def at(self, sigma: float) -> PerturbationSpec:
        """This perturbation at one sigma (the grid's or the search's step)."""
        return self.model_copy(update={"sigma": float(sigma)})


class SamplingSpec(_Strict):
    """How draws are made and bounded."""

    design: Literal["bernoulli", "batched", "antithetic"] = Field(
        "batched",
        description="bernoulli: one fresh noise per example (exact CP); batched: one noise per batch of "
        "examples; antithetic: pairs (eps, -eps) whose pair mean is the iid unit.",
    )
    bound: Literal["star-bets", "betting", "clopper-pearson", "hoeffding", "empirical-bernstein"] = Field(
        "star-bets",
        description="Lower confidence bound on the smoothed score: star-bets (fixed-n, the default) or betting "
        "(anytime-valid, the default when max_draws is set); see README 'Confidence bounds'.",
    )
    draws: int = Field(32, ge=1, description="Number of noise draws (fixed-n audit).")
    max_draws: int | None = Field(
        None,
        ge=1,
        description="If set: sequential audit that stops once every task is decided, at most this many draws.",
    )
    subset: int | None = Field(
        None,
        ge=1,
        description="Batched designs: examples per draw, a uniform subset redrawn each draw (default all).",
    )
    batch_size: int = Field(16, ge=1, description="Examples per forward pass; fixed so a draw replays exactly.")
    randomised_rounding: bool = Field(
        False, description="Round each per-draw mean to a Bernoulli outcome so Clopper-Pearson is exact."
    )
    inconclusive: Literal["fail", "pass"] = Field(
        "fail", description="Verdict when a sequential audit runs out of draws undecided."
    )

    @model_validator(mode="before")
    @classmethod
    def _sequential_default_bound(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("max_draws") is not None and "bound" not in data:
            return {**data, "bound": "betting"}  # stopping on the data needs the anytime-valid bound
        return data

    @model_validator(mode="after")
    def _bound_fits_design(self) -> SamplingSpec:
        if self.bound == "clopper-pearson" and self.design != "bernoulli" and not self.randomised_rounding:
            raise ValueError(
                "bound: clopper-pearson is exact only for 0/1 outcomes; use design: bernoulli, "
                "randomised_rounding: true, or a bounded-mean bound "
                "(star-bets, betting, hoeffding, empirical-bernstein)"
            )
        if self.draws < MIN_DRAWS[self.bound]:
            raise ValueError(f"bound: {self.bound} needs draws >= {MIN_DRAWS[self.bound]}, got draws: {self.draws}")
        if self.max_draws is not None and self.bound != "betting":
            raise ValueError("max_draws (sequential stopping) needs an anytime-valid bound: bound: betting")
        return self


class GateSpec(_Strict):
    """The smoothed score a fine-tune must keep."""

    target: float = Field(0.5, gt=0, lt=1, description="Target smoothed score q per task.")


class LandscapeSpec(_Strict):
    """1-D slices S(theta0 + a * delta) for `auditor landscape`: where the basin ends, per direction family.

    Directions have norm sqrt(d) over the perturbed parameters, so a slice point at scale a is as far
    from theta0 as one noise draw with sigma = a.
    """

    grid: list[float] = Field(
        [0.002, 0.004, 0.008, 0.012, 0.016, 0.024],
        min_length=1,
        description="Scales a > 0, ascending (absolute, like sigma); each is evaluated with both signs, "
        "and a = 0 (the clean model) is always part of a slice.",
    )
    random_directions: int = Field(3, ge=0, description="Independent delta ~ N(0, I) slices (most-case directions).")
    tolerance: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Basin edge: the largest |a| up to which every slice point keeps S >= S(theta0) - tolerance.",
    )
    worst_steps: int = Field(
        4, ge=1, description="Gradient evaluations of the projected ascent that finds each task's worst direction."
    )
    worst_scale: float | None = Field(
        None, gt=0, description="Scale a at which the worst direction is optimised (default: the grid's median)."
    )
    strict_scale: float | None = Field(
        None, gt=0, description="Scale a of the strict-basin test over random directions (unset: no test)."
    )
    strict_directions: int = Field(
        44, ge=1, description="Random directions in the strict-basin test (44 shows >90% at 99% when all hold)."
    )
    strict_fraction: float = Field(
        0.9, gt=0, lt=1, description="The fraction of unchanged directions the strict-basin test tries to show."
    )
    strict_alpha: float = Field(
        0.01, gt=0, lt=1, description="Error level of the strict-basin test, split across tasks (Bonferroni)."
    )
    strict_tolerance: float = Field(
        0.0,
        ge=0,
        le=1,
        description="A direction is 'unchanged' when |S(theta0 + a delta) - S(theta0)| <= this "
        "(0: the paper's strict basin, equal scores).",
    )

    @model_validator(mode="after")
    def _ascending_grid(self) -> LandscapeSpec:
        if any(a <= 0 for a in self.grid):
            raise ValueError("grid: scales must be > 0 (a = 0 is always included; both signs are evaluated)")
        if any(b <= a for a, b in zip(self.grid, self.grid[1:], strict=False)):
            raise ValueError("grid: scales must be strictly ascending")
        return self


class Policy(_Strict):
    """A complete audit policy."""

    schema_version: Literal[1] = Field(description="Policy schema version.")
    model: str = Field("smollm2-135m-instruct", description="Built-in model name or a Hugging Face directory.")
    seed: int = Field(ge=0, lt=2**63, description="Seed of every random number in the audit.")
    alpha: float = Field(0.01, gt=0, lt=1, description="Overall error level, split across tasks (Bonferroni).")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Model dtype.")
    device: str = Field("auto", description="'auto', 'cpu' or a torch device such as 'cuda:0'.")
    perturbation: PerturbationSpec
    sampling: SamplingSpec = Field(SamplingSpec())
    tasks: list[TaskSpec] = Field(min_length=1, description="Tasks to audit.")
    gate: GateSpec = Field(GateSpec())
    landscape: LandscapeSpec = Field(LandscapeSpec(), description="Landscape slices (`auditor landscape`).")

    @model_validator(mode="after")
    def _unique_task_names(self) -> Policy:
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tasks: duplicate task names {dupes}")
        if self.perturbation.grid is not None:
            free = [t.name for t in self.tasks if t.require.min_p_lower is None and t.require.min_radius is None]
            if free:
                raise ValueError(
                    f"perturbation.sigma: a sigma grid certifies each task against its requirement; task(s) {free} "
                    "have none (set require.min_p_lower or require.min_radius)"
                )
        return self


class LoadedPolicy(BaseModel):
    """A validated policy with the text it came from (its digest goes on the certificate)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    policy: Policy
    path: Path | None
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def at_sigma(self, sigma: float, **policy_updates: Any) -> LoadedPolicy:
        """The policy run at one sigma of its search (the recorded text stays the policy as written)."""
        pert = self.policy.perturbation.at(sigma)
        return self.model_copy(
            update={"policy": self.policy.model_copy(update={"perturbation": pert, **policy_updates})}
        )


# union branch names pydantic puts into error locations, and the model each stands for
_BRANCHES: dict[str, type[BaseModel]] = {
    "exact": ExactOracle,
    "contains": ContainsOracle,
    "numeric": NumericOracle,
    "choice": ChoiceOracle,
    "refusal": RefusalOracle,
    "python": PythonOracle,
    "lm-eval": LmEvalOracle,
    "source:file": DataSource,
    "source:lm-eval": LmEvalSource,
}


def parse_policy(text: str, origin: str = "<policy>", path: Path | None = None) -> LoadedPolicy:
    """Validate policy text; raise PolicyError with one line per problem naming `origin` and the field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise PolicyError(f"{origin}:{where} not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if not isinstance(data, dict):
        raise PolicyError(f"{origin}: expected a mapping of policy fields at the top level")
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        # every problem at once, one line each (file, field, problem, suggestion)
        raise PolicyError("\n".join(error_lines(exc, origin, Policy, _BRANCHES))) from exc
    return LoadedPolicy(policy=policy, path=path, text=text)


def load_policy(path: str | Path | None = None) -> LoadedPolicy:
    """Read and validate a policy file (the built-in default when `path` is None)."""
    p = Path(path) if path is not None else DEFAULT_POLICY
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise PolicyError(f"{p}: policy file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{p}: cannot read policy ({exc})") from exc
    return parse_policy(text, origin=str(p), path=p.resolve())
