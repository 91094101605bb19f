"""The fine-tuning gate: does a candidate stay inside a base model's certified radius?

No model is evaluated. The gate streams both checkpoints tensor by tensor, accumulates
||theta_ft - theta0||_2^2 in float64 over exactly the certificate's perturbed parameters, requires
every other tensor to be bit-identical (the theorem covers nothing else), and compares the bound
Phi(Phi^-1(p_lower) - ||Delta||/sigma) with each task's target q. Outside the radius the verdict is
"not certified", never "unsafe": radii are O(sigma) and typical fine-tunes move much further.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from auditor.certificate.schema import Certificate, FileDigest
from auditor.errors import AuditorError, CheckpointError
from auditor.gate.candidate import folder_blockers
from auditor.model.checkpoint import PICKLE_SUFFIXES, SAFE_INDEX, sha256_file, weight_files
from auditor.model.tensor_stream import CHUNK_BYTES, FLOATS, DeltaStats, TensorRef, model_index, stream_delta

_ARCH_KEYS = {"model_type", "architectures", "tie_word_embeddings", "head_dim"}
_HARMLESS_KEYS = {"transformers_version", "_name_or_path", "dtype", "torch_dtype", "use_cache"}
EMBED_SUFFIXES = (
    "embed_tokens.weight",
    "wte.weight",
    "embed_in.weight",
    "word_embeddings.weight",
    "tok_embeddings.weight",
)


def read_config(root: Path) -> dict[str, Any]:
    path = root / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: missing (needed to check the architecture)") from exc
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return data


def tied_aliases(config: dict[str, Any], names: set[str]) -> dict[str, str]:
    """{output-layer name: input-embedding name} when the two are one tensor, else {}."""
    tied = config.get("tie_word_embeddings")
    if tied is None:  # older configs: a missing lm_head in the files means it is tied
        tied = "lm_head.weight" not in names
    if not tied:
        return {}
    embeds = [n for n in names if n.endswith(EMBED_SUFFIXES)]
    if len(embeds) != 1:
        raise CheckpointError(f"tied embeddings, but which tensor is the input embedding? ({embeds})")
    return {"lm_head.weight": embeds[0]}


def compare_configs(base: dict[str, Any], cand: dict[str, Any]) -> list[str]:
    """Raise on a different architecture; return the other changed keys (they change f, not theta)."""
    keys = sorted((set(base) | set(cand)) - _HARMLESS_KEYS)
    changed = [k for k in keys if base.get(k) != cand.get(k)]
    # from_pretrained's default dtype="auto" casts every weight to the config's dtype (older files: torch_dtype)
    if base.get("dtype", base.get("torch_dtype")) != cand.get("dtype", cand.get("torch_dtype")):
        changed.append("dtype")
    arch = [k for k in changed if k in _ARCH_KEYS or k.endswith("_size") or k.startswith("num_")]
    if arch:
        diffs = ", ".join(f"{k}: {base.get(k)!r} -> {cand.get(k)!r}" for k in arch[:4])
        raise CheckpointError(f"candidate has a different architecture (config.json {diffs})")
    return changed


def refuse_pickles(root: Path) -> None:
    pickles = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(f"{root / pickles[0]}: pickle file (it can execute code when loaded): refused")


def candidate_files(root: Path) -> list[Path]:
    """Every file of the candidate but top-level hidden entries (.git, .cache): loaders glob sub-folders."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.relative_to(root).parts[0].startswith("."))


def _few(names: list[str], k: int = 5) -> str:
    return ", ".join(names[:k]) + (f" (+{len(names) - k} more)" if len(names) > k else "")


def hash_base_and_candidate(
    cert: Certificate, base: Path, candidate: list[Path], cand_root: Path, only: set[str] | None = None
) -> tuple[list[FileDigest], list[FileDigest]]:
    """Hash the base (files in `only`, default all) and the candidate in parallel; check the base."""
    if not cert.model.files:
        raise AuditorError("the certificate lists no model files (in-memory audit): no base to check")
    if not base.is_dir():
        raise CheckpointError(f"{base}: base model directory not found (pass --base)")
    files = [f for f in cert.model.files if only is None or f.path in only]
    paths = [base / f.path for f in files]
    for p in paths:
        if not p.is_file():
            raise CheckpointError(f"{p}: listed by the certificate but missing from the base")
    with ThreadPoolExecutor(2) as pool:  # hashlib releases the GIL: the two trees hash in parallel
        digests = list(pool.map(sha256_file, paths + candidate))
    for f, got in zip(files, digests[: len(paths)], strict=True):
        if got != f.sha256:
            raise CheckpointError(
                f"{base / f.path}: sha256 {got[:16]}… differs from the certificate's "
                f"{f.sha256[:16]}…: not the certified base"
            )
    listed = {f.path for f in cert.model.files}
    for w in weight_files(base):
        if w.relative_to(base).as_posix() not in listed:
            raise CheckpointError(f"{w}: base weight file not covered by the certificate")
    roots = [base] * len(paths) + [cand_root] * len(candidate)
    rows = [
        FileDigest(path=p.relative_to(root).as_posix(), sha256=d, size=p.stat().st_size)
        for p, d, root in zip(paths + candidate, digests, roots, strict=True)
    ]
    return rows[: len(paths)], rows[len(paths) :]


@dataclass
class TaskGate:
    """One task's gate arithmetic: radius for its target q, and the bounds at ||Delta||."""

    name: str
    p_lower: float
    target: float
    radius: float
    strong: float
    weak: float
    sigma: float  # the std radii are in: the claim's sigma (absolute), 1 (relative: whitened)

    @property
    def bound(self) -> float:
        return max(self.strong, self.weak)  # both are valid lower bounds

    @property
    def certified(self) -> bool:
        return self.bound >= self.target


@dataclass
class GateResult:
    """Everything the gate found, ready for the summary and the JSON report."""

    kind: str
    cert: Certificate
    base: Path | None
    candidate: Path
    delta: DeltaStats
    tasks: list[TaskGate]
    verdict: str
    reasons: list[str]
    notes: list[str] = field(default_factory=list)
    base_files: list[FileDigest] = field(default_factory=list)
    candidate_files: list[FileDigest] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    certified_norm: float = 0.0

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_json(self, cert_path: str | None = None) -> dict[str, Any]:
        c, p, norm = self.cert, self.cert.perturbation, self.delta.norm
        tasks = [
            {**asdict(t), "radius_over_sigma": t.radius / t.sigma, "bound": t.bound, "certified": t.certified}
            for t in self.tasks
        ]
        return {
            "report": "auditor-gate",
            "report_version": 1,
            "kind": self.kind,
            "verdict": self.verdict,
            "reasons": self.reasons,
            "notes": self.notes,
            "tasks": tasks,
            "guarantee": GATE_GUARANTEE,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "timings": self.timings,
            "certificate": {
                "path": cert_path,
                "run_id": c.run_id,
                "model": c.model.name,
                "verdict": c.verdict,
                "root_digest": c.model.root_digest,
                "policy_sha256": c.policy.sha256,
            },
            "perturbation": p.model_dump(
                include={"space", "sigma", "scale", "dimension", "typical_noise_norm", "parameters_digest"}
            ),
            "base": {
                "path": str(self.base) if self.base else None,
                "files": [f.model_dump() for f in self.base_files],
            },
            "candidate": {
                "path": str(self.candidate),
                "files": [f.model_dump() for f in self.candidate_files],
            },
            "delta": {
                "norm": norm,
                "norm_over_sigma": norm / p.sigma,
                # the norm the radii are in: ||Delta|| (absolute) or ||Sigma^-1/2 Delta|| (relative)
                "certified_norm": self.certified_norm,
                "bytes_read": self.delta.bytes_read,
                "by_tensor": {k: math.sqrt(v) for k, v in sorted(self.delta.squared.items()) if v > 0},
                "changed_outside_perturbed_set": self.delta.changed_outside,
            },
            **self.details,
        }


GATE_GUARANTEE = (
    "pass: with the certificate's confidence (1 - alpha), every task's smoothed score E S(theta_ft + eps), "
    "eps ~ N(0, sigma^2 I) on the perturbed parameters, is at least its bound, which is at least the "
    "target. It bounds the smoothed score, not the raw score. 'not certified' means outside the certified "
    "radius, not unsafe: certify the candidate itself (--recertify). 'not certifiable': the candidate "
    "changes something the certificate does not cover. A sigma-grid certificate with the simultaneous "
    "(Bonferroni) family: each task's bound is the best over the grid's audited sigmas, at that row's sigma."
)


def certified_norm(cert: Certificate, delta: DeltaStats, aliases: dict[str, str] | None = None) -> float:
    """The norm the certificate's radii are in: ||Delta||_2, or ||Sigma^-1/2 Delta||_2 for relative noise.

    Relative: sqrt(sum_k ||Delta_k||^2 / sigma_k^2) over the perturbed tensors, sigma_k = sigma * RMS_k
    (recorded; the gate checks it against the base first: trust.check_tensor_rms).
    """
    sigmas = cert.perturbation.tensor_sigmas()
    if sigmas is None:
        return delta.norm
    canon = aliases or {}
    by_name = {canon.get(n, n): s for n, s in sigmas.items()}
    missing = sorted(n for n in delta.squared if canon.get(n, n) not in by_name)
    if missing:
        raise AuditorError(f"certificate: field 'perturbation.tensor_rms' has no entry for {missing[0]}")
    return math.sqrt(math.fsum(v / by_name[canon.get(n, n)] ** 2 for n, v in delta.squared.items()))


def task_claims(cert: Certificate) -> dict[str, list[tuple[float, float]]]:
    """(p_lower, sigma) pairs each task's gate bound may use: one family, so the best of it holds at alpha.

    The certificate's own bound at its sigma; or, for a sigma grid audited fixed-n, the simultaneous
    family: every audited sigma's bound at alpha_task / m (Bonferroni over the grid). The choice
    depends on the certificate alone, never on the candidate, so picking the best pair per task
    keeps the certificate's confidence. Relative noise: sigma 1 (radii whitened).
    """
    search = cert.sigma_search
    if (
        search is not None
        and search.mode == "grid"
        and all(s.p_lower_bonferroni is not None for e in search.edges for s in e.steps)
    ):
        return {e.task: [(float(s.p_lower_bonferroni or 0.0), s.sigma) for s in e.steps] for e in search.edges}
    unit = cert.perturbation.radius_unit
    return {t.name: [(t.p_lower, unit)] for t in cert.tasks}


def judge(
    cert: Certificate, delta: DeltaStats, blockers: list[str], aliases: dict[str, str] | None = None
) -> tuple[list[TaskGate], str, list[str], float]:
    """Bounds per task at the certified norm and the verdict: pass iff no blocker and every bound >= its target.

    Also returns that norm (||Delta||, or the whitened ||Sigma^-1/2 Delta|| for relative noise).
    """
    from auditor.stats import smoothing

    norm = certified_norm(cert, delta, aliases)
    what = "||Delta||" if cert.perturbation.scale == "absolute" else "||Sigma^-1/2 Delta||"
    claims = task_claims(cert)
    rows = []
    for t in cert.tasks:
        options = [
            TaskGate(
                t.name,
                p,
                t.target,
                float(smoothing.certified_radius(p, t.target, s)),
                float(smoothing.strong_bound(p, norm, s)),
                float(smoothing.weak_bound(p, norm, s)),
                s,
            )
            for p, s in claims[t.name]
        ]
        rows.append(max(options, key=lambda g: (g.bound, g.radius)))
    reasons = list(blockers)
    for r in rows:
        rel = "<=" if r.certified else ">"
        at = f" at sigma {r.sigma:g}" if len(claims[r.name]) > 1 else ""
        reasons.append(
            f"{r.name}: {what} = {norm:.4g} {rel} R(q={r.target:g}) = {r.radius:.4g}{at}; "
            f"certified smoothed score >= {r.bound:.4f} (target {r.target:g})"
        )
    if blockers:
        return rows, "not certifiable", reasons, norm
    return rows, "pass" if all(r.certified for r in rows) else "not certified", reasons, norm


def _fold_aliases(idx: dict[str, TensorRef], aliases: dict[str, str]) -> list[tuple[str, TensorRef]]:
    """Rename tied copies to their one parameter name; return copies stored twice (they must agree)."""
    twice = []
    for alias, canon in aliases.items():
        if alias in idx:
            ref = idx.pop(alias)
            if canon in idx:
                twice.append((canon, ref))
            else:
                idx[canon] = TensorRef(canon, ref.path, ref.offset, ref.nbytes, ref.dtype, ref.shape)
    return twice


def check_layout(
    cert: Certificate, base: dict[str, TensorRef], cand: dict[str, TensorRef], perturbed: set[str]
) -> list[str]:
    """Shapes and dtypes the loader accepts; blockers for tensors it would add or leave at init.

    The certificate's parameters must exist in the base and add up to its dimension (else the
    certificate is refused: trust.Untrusted).
    """
    from auditor.gate.trust import check_dimension

    check_dimension(cert, {n: r.numel for n, r in base.items()}, Path("certificate"), perturbed)
    for n in perturbed:
        if base[n].dtype not in FLOATS:
            raise CheckpointError(f"perturbed tensor {n} has non-float dtype {base[n].dtype}")
    for n in sorted(set(base) & set(cand)):
        b, c = base[n], cand[n]
        if c.shape != b.shape:  # from_pretrained raises on a size mismatch
            raise CheckpointError(f"tensor {n}: shape {list(c.shape)} in the candidate, base {list(b.shape)}")
        if c.dtype != b.dtype:
            raise CheckpointError(f"tensor {n}: dtype {c.dtype} in the candidate, {b.dtype} in the base")
    blockers = []
    missing, extra = sorted(set(base) - set(cand)), sorted(set(cand) - set(base))
    if missing:
        blockers.append(
            f"candidate lacks tensor(s) of the base: {_few(missing)} (the loader would initialise them afresh)"
        )
    if extra:
        blockers.append(f"candidate has tensor(s) matching no parameter of the base: {_few(extra)} (not measured)")
    return blockers


def outside_blocker(names: list[str]) -> str:
    return (
        f"changes {len(names)} tensor(s) outside the certificate's perturbed set (no bound applies): {_few(names, 10)}"
    )


def gate_checkpoint(cert: Certificate, candidate: Path, base: Path, chunk: int = CHUNK_BYTES) -> GateResult:
    """Gate a full fine-tuned checkpoint against the certified base (streamed; bounded memory)."""
    from auditor.gate.trust import check_tensor_rms

    t0 = time.perf_counter()
    if cert.perturbation.space != "weights":
        raise AuditorError(
            "this certificate smooths input embeddings: it certifies token substitutions "
            "(auditor tokens), not weight changes"
        )
    if not candidate.is_dir():
        raise CheckpointError(f"{candidate}: candidate directory not found")
    refuse_pickles(candidate)
    loaded = weight_files(candidate)  # transformers' precedence; a folder it rejects is an error
    base_files, cand_files = hash_base_and_candidate(cert, base, candidate_files(candidate), candidate)
    t1 = time.perf_counter()
    bcfg, ccfg = read_config(base), read_config(candidate)
    reads = {p.relative_to(candidate).as_posix() for p in loaded}
    if len(loaded) > 1:
        reads.add(SAFE_INDEX)
    blockers = folder_blockers(cert, candidate, cand_files, reads, base, "checkpoint")
    if changed := compare_configs(bcfg, ccfg):
        blockers.append(f"config.json changes {', '.join(changed)}: the certificate covers the base's only")
    bidx, cidx = model_index(base), model_index(candidate)
    aliases = tied_aliases(bcfg, set(bidx))
    _fold_aliases(bidx, aliases)
    twice = _fold_aliases(cidx, aliases)
    perturbed = {aliases.get(n, n) for n in cert.perturbation.parameters}
    blockers += check_layout(cert, bidx, cidx, perturbed)
    check_tensor_rms(cert, bidx, Path("certificate"), aliases)
    for canon, copy in twice:  # a tied tensor stored twice loads as one: both copies must agree
        same = (copy.shape, copy.dtype) == (cidx[canon].shape, cidx[canon].dtype)
        if not same or stream_delta([(copy.name, cidx[canon], copy)], set(), chunk=chunk).changed_outside:
            raise CheckpointError(f"tied tensors {copy.name} and {canon} differ in the candidate")
    common = [n for n in bidx if n in cidx]
    order = sorted(common, key=lambda n: (str(bidx[n].path), bidx[n].offset))  # sequential reads of the base
    delta = stream_delta([(n, bidx[n], cidx[n]) for n in order], perturbed, cert.model.dtype, chunk=chunk)
    if delta.changed_outside:
        blockers.append(outside_blocker(delta.changed_outside))
    tasks, verdict, reasons, norm = judge(cert, delta, blockers, aliases)
    notes = [f"tied weights {a} = {c}: one parameter, counted once" for a, c in aliases.items()]
    timings = {"digests_s": t1 - t0, "delta_s": delta.seconds, "total_s": time.perf_counter() - t0}
    return GateResult(
        "checkpoint",
        cert,
        base,
        candidate,
        delta,
        tasks,
        verdict,
        reasons,
        notes,
        base_files,
        cand_files,
        timings,
        certified_norm=norm,
    )
