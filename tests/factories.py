"""Build plausible certificates for tests that do not need to run an audit."""

from __future__ import annotations

import hashlib
from pathlib import Path

from auditor.certificate.schema import (
    BoundCurve,
    Certificate,
    FileDigest,
    ModelIdentity,
    PerturbationRecord,
    PolicyRecord,
    SamplingRecord,
    TaskResult,
    ToolRecord,
)
from auditor.stats import smoothing

POLICY_TEXT = (
    "schema_version: 1\nseed: 1\nperturbation: {sigma: 0.004}\n"
    "tasks: [{name: t, source: builtin:capitals, oracle: {type: contains}}]\n"
)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_certificate(
    model_dir: Path | None = None,
    sigma: float = 0.004,
    p_lower: float = 0.8,
    target: float = 0.5,
    parameters: list[str] | None = None,
    dimension: int = 1000,
    tensor_rms: dict[str, float] | None = None,
    typical_noise_norm: float | None = None,
) -> Certificate:
    """A certificate with real bound arithmetic; file digests from `model_dir` when given.

    `tensor_rms` makes it a relative-noise certificate (radii whitened: computed with sigma = 1).
    """
    scale = "absolute" if tensor_rms is None else "relative"
    extra = "" if tensor_rms is None else ", scale: relative"
    policy = POLICY_TEXT.replace("sigma: 0.004", f"sigma: {sigma}{extra}")
    unit = sigma if tensor_rms is None else 1.0
    files: list[FileDigest] = []
    if model_dir is not None:
        for f in sorted(Path(model_dir).iterdir()):
            if f.is_file():
                files.append(FileDigest(path=f.name, sha256=_sha(f.read_bytes()), size=f.stat().st_size))
    root = _sha("".join(f"{f.path}\0{f.sha256}\n" for f in files).encode())
    radius = float(smoothing.certified_radius(p_lower, target, unit))
    curve = smoothing.bound_curve(p_lower, unit, [unit * x for x in (0, 0.25, 0.5, 1, 1.5, 2)])
    task = TaskResult(
        name="capitals",
        description={"source": "builtin:capitals", "oracle": "contains", "n_examples": 24},
        n_examples=24,
        clean_score=0.83,
        draws=32,
        evaluations=32 * 24,
        p_hat=0.84,
        p_lower=p_lower,
        p_upper=0.9,
        statistical_slack=0.84 - p_lower,
        loss_under_noise=0.83 - 0.84,
        target=target,
        radius=radius,
        radius_weak=float(smoothing.weak_radius(p_lower, target, unit)),
        radius_over_sigma=radius / unit,
        curve=BoundCurve(**curve),
        min_p_lower=0.6,
        min_radius=None,
        verdict="pass",
        reasons=[f"p_lower {p_lower:.3f} >= 0.600"],
    )
    return Certificate(
        run_id="20261129-000000-test",
        tool=ToolRecord(name="auditor", version="0.1.0", versions={"python": "3.11"}),
        started="2026-11-29T00:00:00+00:00",
        finished="2026-11-29T00:01:00+00:00",
        model=ModelIdentity(
            name="tiny",
            source=str(model_dir or "memory"),
            files=files,
            root_digest=root,
            dtype="float32",
            n_parameters=dimension,
        ),
        policy=PolicyRecord(path="policy.yaml", sha256=_sha(policy.encode()), text=policy),
        seed=1,
        perturbation=PerturbationRecord(
            space="weights",
            sigma=sigma,
            include=["*"],
            exclude=[],
            parameters=parameters or ["w"],
            parameters_digest=_sha("\n".join(parameters or ["w"]).encode()),
            dimension=dimension,
            typical_noise_norm=sigma * dimension**0.5 if typical_noise_norm is None else typical_noise_norm,
            scale=scale,
            tensor_rms=tensor_rms,
        ),
        sampling=SamplingRecord(
            design="batched",
            bound="betting",
            exact=True,
            anytime_valid=True,
            sequential=False,
            draws_planned=32,
            draws_used=32,
            batch_size=16,
            subset=None,
            randomised_rounding=False,
            alpha=0.01,
            alpha_per_task=0.01,
            correction="bonferroni",
        ),
        tasks=[task],
        verdict="pass",
        reasons=["all tasks pass"],
    )


def sign_certificate(cert: Certificate, run_dir: Path, keys_dir: Path) -> Path:
    """Write `cert` into `run_dir` with a signed envelope (keys made in `keys_dir` if absent); the public key."""
    from auditor.attest import signing
    from auditor.certificate.schema import write_certificate

    if not (keys_dir / signing.PUBLIC_KEY).exists():
        signing.keygen(keys_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_certificate(cert, run_dir / signing.CERT_JSON)
    signer = signing.load_signer(keys_dir / signing.SIGNING_KEY)
    signing.write_envelope(
        signing.sign_statement(signing.build_statement(cert, {}), signer), run_dir / signing.ENVELOPE
    )
    return keys_dir / signing.PUBLIC_KEY
