"""The certificate: what was audited, how, what was measured, and what that guarantees.

Its canonical JSON (sorted keys, UTF-8, no NaN, compact separators) is the exact byte string that
is hashed and signed, so the same certificate always serialises to the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from auditor.errors import AuditorError

CERTIFICATE_VERSION: Literal[2] = 2
# "measured": the task (or, overall, every task) has no requirement: numbers only, never a pass.
Verdict = Literal["pass", "fail", "inconclusive", "measured"]

GUARANTEE = (
    "With probability at least 1 - alpha over the audit's random draws, for every task the smoothed score "
    "g(theta) = E_eps S(theta + eps), eps ~ N(0, sigma^2 I) on the perturbed parameters, is at least p_lower; "
    "and any change Delta of those parameters keeps the smoothed score of the changed model at least "
    "Phi(Phi^-1(p_lower) - ||Delta||_2 / sigma) (and at least p_lower - ||Delta||_2 / (sqrt(2 pi) sigma))."
)
GUARANTEE_RELATIVE = (
    "With probability at least 1 - alpha over the audit's random draws, for every task the smoothed score "
    "g(theta) = E_eps S(theta + eps), eps ~ N(0, Sigma) with Sigma = diag(sigma_k^2) and sigma_k = sigma * "
    "RMS(theta0_k) on the coordinates of perturbed tensor k, is at least p_lower; and any change Delta of those "
    "parameters keeps the smoothed score of the changed model at least Phi(Phi^-1(p_lower) - ||Sigma^-1/2 Delta||_2) "
    "(and at least p_lower - ||Sigma^-1/2 Delta||_2 / sqrt(2 pi)), where ||Sigma^-1/2 Delta||_2^2 = "
    "sum_k ||Delta_k||_2^2 / sigma_k^2. Radii are stated in that whitened norm (units where sigma_k = 1)."
)
DOES_NOT_CLAIM = [
    "It does not bound the raw (unsmoothed) score of the model or of a fine-tuned model; the raw score of a "
    "changed model can fall further by the loss under noise (clean score minus smoothed score), which the "
    "certificate estimates (clean minus p_hat) but does not bound.",
    "It says nothing about changes to parameters outside the perturbed set, nor about tasks or prompts "
    "outside the audited benchmark.",
    "The certified radius is an L2 distance in weight space of order sigma; typical fine-tunes move the weights "
    "much further. A change outside the radius is 'not certified', not 'unsafe'.",
    "An oracle is only as good as its judge: keyword refusal judges and string matching can misjudge answers.",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileDigest(_Frozen):
    """One file of the checkpoint and its SHA-256."""

    path: str
    sha256: str
    size: int


class AttestedFile(_Frozen):
    """A scorer or data file that decides the outcome, as the policy names it, and its SHA-256."""

    role: Literal["scorer", "data"]
    path: str
    sha256: str
    size: int


class ModelIdentity(_Frozen):
    """Which weights were audited: every file's digest and a root digest over all of them."""

    name: str
    source: str
    files: list[FileDigest]
    root_digest: str
    dtype: str
    n_parameters: int


class PolicyRecord(_Frozen):
    """The policy text exactly as read, and its digest."""

    path: str | None
    sha256: str
    text: str


class PerturbationRecord(_Frozen):
    """Which coordinates were smoothed and at what scale."""

    space: str
    sigma: float
    include: list[str]
    exclude: list[str]
    parameters: list[str]
    parameters_digest: str
    dimension: int
    typical_noise_norm: float = Field(description="sigma * sqrt(dimension): the size of a draw, not a radius.")
    scale: Literal["absolute", "relative"] = Field(
        "absolute", description="relative: tensor k had std sigma_k = sigma * tensor_rms[k]; radii are whitened."
    )
    tensor_rms: dict[str, float] | None = Field(
        None, description="relative only: RMS(theta0_k) per perturbed tensor, from the base weights."
    )

    @property
    def radius_unit(self) -> float:
        """The std radii are measured in: sigma (absolute), 1 (relative: the whitened norm)."""
        return self.sigma if self.scale == "absolute" else 1.0

    def tensor_sigmas(self) -> dict[str, float] | None:
        """sigma_k per perturbed tensor (relative), else None (every coordinate has std sigma)."""
        return None if self.tensor_rms is None else {n: self.sigma * r for n, r in self.tensor_rms.items()}


class SamplingRecord(_Frozen):
    """How the draws were made and bounded."""

    design: str
    bound: str
    exact: bool = Field(description="True when the bound's coverage is exact (not asymptotic).")
    anytime_valid: bool
    sequential: bool
    draws_planned: int
    draws_used: int
    batch_size: int
    subset: int | None
    randomised_rounding: bool
    alpha: float
    alpha_per_task: float
    correction: str


class BoundCurve(_Frozen):
    """Certified smoothed score after a change of norm ||Delta||, by the two theorems."""

    delta_norm: list[float]
    strong: list[float]
    weak: list[float]


class FragileExample(_Frozen):
    """One example that failed under noise: how often, and what the model answered clean and perturbed."""

    index: int = Field(description="Position of the example in the task.")
    prompt: str | None
    reference: str | None
    clean_answer: str | None = Field(description="The unperturbed model's answer (None for opaque scorers).")
    clean_correct: bool
    scored: int = Field(description="Times the example was scored under noise.")
    failures: int
    fail_rate: float
    flip_rate: float = Field(description="Fraction of noisy scorings whose outcome differs from the clean one.")
    perturbed_answer: str | None = Field(description="An answer under a draw where it failed (re-run from the log).")
    perturbed_draw: int | None


class Fragility(_Frozen):
    """Per-example view of the draws: which examples flip, and how the per-draw scores spread."""

    flip_rate: list[float | None] = Field(description="Per example: fraction of noisy scorings that differ from clean.")
    scored: list[int] = Field(description="Per example: times scored under noise.")
    examples_never_failing: int
    histogram_edges: list[float]
    histogram_counts: list[int] = Field(description="Per-draw scores (mean outcome) in equal bins over [0, 1].")
    fragile: list[FragileExample] = Field(description="The examples failing most often under noise.")


class TaskResult(_Frozen):
    """Measurements, bounds and verdict for one task."""

    name: str
    description: dict[str, Any]
    n_examples: int
    clean_score: float
    draws: int
    evaluations: int = Field(description="Example evaluations under noise (the audit's cost).")
    p_hat: float
    p_lower: float
    p_upper: float
    statistical_slack: float = Field(description="p_hat - p_lower: what the finite number of draws costs.")
    loss_under_noise: float = Field(description="clean_score - p_hat: the measured drop of the score under noise.")
    target: float
    radius: float = Field(description="Certified L2 radius for the target (strong theorem).")
    radius_weak: float
    radius_over_sigma: float
    curve: BoundCurve
    min_p_lower: float | None
    min_radius: float | None
    verdict: Verdict
    reasons: list[str]
    fragility: Fragility | None = None


class SigmaStep(_Frozen):
    """One sigma of a grid for one task: its audit's lower bound and whether it met the threshold."""

    sigma: float
    p_lower: float = Field(description="At the task's alpha (the fixed-sequence test of this sigma).")
    threshold: float = Field(description="The task's requirement as a p_lower (min_p_lower, min_radius at q).")
    certified: bool = Field(description="p_lower >= threshold.")
    p_lower_bonferroni: float | None = Field(
        None, description="At alpha_task / m over the m grid sigmas (fixed-n audits only); simultaneous family."
    )
    radius_bonferroni: float | None = None
    run: str = Field(description="That sigma's run folder, relative to this certificate ('.': this one).")
    certificate_sha256: str | None = Field(
        None, description="SHA-256 of that run's certificate.json (None for this certificate's own sigma)."
    )


class SigmaEdge(_Frozen):
    """The certified basin edge of one task along the grid."""

    task: str
    steps: list[SigmaStep] = Field(description="The sigmas audited for this task, up to its first failure.")
    sigma_star: float | None = Field(description="Largest sigma certified (None: the first sigma failed).")
    stopped_at: float | None = Field(description="The sigma whose failure ended the sequence (None: grid exhausted).")
    radius_at_star: float | None = Field(
        description="sigma* (Phi^-1(threshold) - Phi^-1(q)): holds on the fixed-sequence event."
    )


class SigmaPilot(_Frozen):
    """One candidate of sigma: auto, as the pilot draws saw it."""

    sigma: float
    p_hat: dict[str, float] = Field(description="Pilot mean per task (never part of this certificate's bound).")
    predicted_p_lower: dict[str, float] = Field(
        description="What the certifying draws would bound if the pilot's mean and variance were exact (a heuristic)."
    )
    min_radius: float = Field(description="Smallest predicted radius over tasks at the gate target: the choice score.")
    reachable: bool = Field(
        True, description="Whether the policy's draws could meet every requirement at this sigma (else never chosen)."
    )


class SigmaSearch(_Frozen):
    """How this certificate's sigma came about: a fixed-sequence grid or a pilot's choice, and what it claims."""

    mode: Literal["grid", "auto"]
    sigmas: list[float] = Field(description="grid: the policy's grid; auto: the pilot's candidates.")
    procedure: str
    claims: list[str] = Field(description="What holds, and at which error level (the alpha accounting).")
    edges: list[SigmaEdge] = Field(default_factory=list, description="grid: each task's sequence.")
    pilot_seed: int | None = None
    pilot_draws: int | None = None
    pilot: list[SigmaPilot] = Field(default_factory=list, description="auto: every candidate's pilot result.")
    chosen: float | None = Field(None, description="auto: the sigma the pilot chose (this certificate's sigma).")


class ToolRecord(_Frozen):
    """Software that produced the certificate."""

    name: str
    version: str
    versions: dict[str, str]


class Certificate(_Frozen):
    """A complete, versioned audit certificate."""

    certificate_version: Literal[2] = CERTIFICATE_VERSION
    run_id: str
    tool: ToolRecord
    started: str
    finished: str
    model: ModelIdentity
    policy: PolicyRecord
    seed: int
    perturbation: PerturbationRecord
    sampling: SamplingRecord
    tasks: list[TaskResult]
    verdict: Verdict
    reasons: list[str]
    guarantee: str = GUARANTEE
    does_not_claim: list[str] = Field(default_factory=lambda: list(DOES_NOT_CLAIM))
    replay: str = Field(
        "",
        description="How a third party re-runs recorded draws and checks every per-example outcome against the log.",
    )
    artifacts: dict[str, str] = Field(
        default_factory=dict, description="Digests (sha256) of rendered HTML/PDF, keyed by file name."
    )
    attested_files: list[AttestedFile] = Field(
        default_factory=list, description="Scorer and data files the tasks read (signed subjects)."
    )
    sigma_search: SigmaSearch | None = Field(
        None, description="Set when the policy's sigma is a grid or auto: the search and its claims."
    )

    def canonical_json(self) -> bytes:
        data = self.model_dump(mode="json")
        if data["sigma_search"] is None:
            del data["sigma_search"]  # a single-sigma certificate keeps the bytes it had before the field existed
        return canonical_json(data)


def canonical_json(data: Any) -> bytes:
    """Sorted keys, UTF-8, compact, no NaN: the byte string that is hashed and signed."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def write_certificate(cert: Certificate, path: Path) -> None:
    """Write the canonical JSON (plus a trailing newline) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(cert.canonical_json() + b"\n")
    tmp.replace(path)


def read_certificate(path: Path) -> Certificate:
    """Load and validate a certificate JSON file; one-line AuditorError on any problem."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise AuditorError(f"{path}: certificate not found") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AuditorError(f"{path}: not a readable certificate JSON ({exc})") from exc
    try:
        return Certificate.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise AuditorError(f"{path}: field '{loc}': {err['msg']}") from exc
