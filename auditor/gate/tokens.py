"""Token-substitution bounds from embedding-row distances of the certified base model.

Replacing tokens t_i -> t'_i moves the embedding by ||delta|| = sqrt(sum ||E[t_i] - E[t'_i]||^2), and
the smoothed score stays at least Phi(Phi^-1(p_lower) - ||delta|| / sigma).
- Input-embedding certificates (noise on each position's embedding): EXACT, a Cohen-style certificate
  for that smoothed model; each OLD=NEW is one substituted position. The distance is taken on what the
  embedding layer outputs (rows scaled by sqrt(d) for Gemma-style models), where the noise is added.
- Weight certificates: HEURISTIC (the paper's Thm 4.5: the substitution is treated as a weight change
  of the embedding matrix). It needs distinct replaced tokens (refused otherwise), an embedding matrix
  that was perturbed (refused otherwise), and untied input/output embeddings (warned otherwise).
  With relative noise (std sigma * RMS per tensor) the change lies in the embedding matrix alone, so the
  whitened norm is ||delta|| / sigma_E with sigma_E = sigma * RMS(E), recomputed from the base's bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from auditor.certificate.schema import Certificate
from auditor.errors import AuditorError, CheckpointError
from auditor.gate.radius import EMBED_SUFFIXES, hash_base_and_candidate, read_config, tied_aliases
from auditor.model.tensor_stream import MODEL_DTYPES, TensorRef, as_floats, model_index


@dataclass
class TokenResult:
    """A token bound (or the reason there is none), per task."""

    label: str
    space: str
    embedding: str
    sigma: float
    k: int
    substitutions: list[dict[str, Any]]
    delta_norm: float | None
    tasks: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    refused: str | None = None
    worst_case: dict[str, Any] | None = None
    scale: float = 1.0

    @property
    def verdict(self) -> str:
        if self.refused:
            return "refused"
        return "pass" if all(t["certified"] for t in self.tasks) else "not certified"

    def to_json(self, cert_path: str | None = None) -> dict[str, Any]:
        return {
            "report": "auditor-tokens",
            "report_version": 1,
            "certificate": cert_path,
            "label": self.label,
            "space": self.space,
            "embedding": self.embedding,
            "sigma": self.sigma,
            "k": self.k,
            "substitutions": self.substitutions,
            "delta_norm": self.delta_norm,
            "tasks": self.tasks,
            "warnings": self.warnings,
            "refused": self.refused,
            "worst_case": self.worst_case,
            "embedding_scale": self.scale,
            "verdict": self.verdict,
        }

    def print(self, console: Any) -> None:
        from rich.table import Table

        colour = "green" if self.label == "EXACT" else "yellow"
        console.print(
            f"auditor tokens — [{colour}]{self.label}[/] ({self.space} certificate, {self.embedding}) — "
            f"verdict: [bold]{self.verdict.upper()}[/]"
        )
        for w in self.warnings:
            console.print(f"[red]assumption violated:[/] {w}")
        if self.refused:
            console.print(f"[red]refused:[/] {self.refused}")
            return
        subs = Table(box=None, pad_edge=False)
        for col in ("old", "new", "distance"):
            subs.add_column(col, justify="right" if col.startswith("|") else "left")
        for s in self.substitutions:
            subs.add_row(repr(s["old"]), repr(s["new"]), f"{s['distance']:.4g}")
        console.print(subs)
        assert self.delta_norm is not None
        console.print(f"||delta||_F = {self.delta_norm:.4g}   ||delta||/sigma = {self.delta_norm / self.sigma:.3f}")
        tasks = Table(box=None, pad_edge=False)
        for col in ("task", "p_lower", "target q", "bound", ""):
            tasks.add_column(col, justify="left" if col == "task" else "right")
        for t in self.tasks:
            mark = "[green]certified[/]" if t["certified"] else "[yellow]not certified[/]"
            tasks.add_row(t["name"], f"{t['p_lower']:.4f}", f"{t['target']:g}", f"{t['bound']:.4f}", mark)
        console.print(tasks)
        console.print("[dim]Bounds hold for the smoothed score, not the raw score.[/]")


def parse_substitution(text: str) -> tuple[str, str]:
    """'OLD=NEW' (split at the first '=', so '==x' means '=' -> 'x'; use #id for other tokens with '=')."""
    if text.startswith("==") and len(text) > 2:
        return "=", text[2:]
    old, sep, new = text.partition("=")
    if not sep or not old or not new:
        raise AuditorError(f"--substitute {text!r}: expected OLD=NEW (token strings, or ids as #123)")
    return old, new


def token_id(token: str, tokenizer: Any, vocab_size: int) -> int:
    """'#123' -> 123; else the vocabulary entry, else a string that encodes to exactly one token."""
    if token.startswith("#") and token[1:].isdigit():
        tid = int(token[1:])
    elif tokenizer is None:
        raise AuditorError(f"token {token!r}: no tokenizer in the base directory; give ids as #123")
    elif token in tokenizer.get_vocab():
        tid = int(tokenizer.convert_tokens_to_ids(token))
    else:
        ids = tokenizer.encode(token, add_special_tokens=False)
        if len(ids) != 1:
            raise AuditorError(f"token {token!r} is not a single token (encodes to {len(ids)}: {ids}); use #id")
        tid = int(ids[0])
    if not 0 <= tid < vocab_size:
        raise AuditorError(f"token id {tid} outside the vocabulary (size {vocab_size})")
    return tid


def read_rows(ref: TensorRef, ids: list[int], model_dtype: str | None) -> np.ndarray:
    """Rows `ids` of a 2-D tensor as float64, as the audit saw them (cast to its dtype); nothing else read."""
    row = ref.nbytes // ref.shape[0]
    out = np.empty((len(ids), ref.shape[1]), np.float64)
    with open(ref.path, "rb") as f:
        for i, tid in enumerate(ids):
            f.seek(ref.offset + tid * row)
            data = f.read(row)
            if len(data) != row:
                raise CheckpointError(f"{ref.path}: truncated while reading {ref.name}")
            out[i] = as_floats(data, ref.dtype, MODEL_DTYPES.get(model_dtype or ""))
    return out


def read_matrix(ref: TensorRef, model_dtype: str | None) -> np.ndarray:
    """A whole 2-D tensor as float64, as the audit saw it."""
    with open(ref.path, "rb") as f:
        f.seek(ref.offset)
        data = f.read(ref.nbytes)
    if len(data) != ref.nbytes:
        raise CheckpointError(f"{ref.path}: truncated while reading {ref.name}")
    return as_floats(data, ref.dtype, MODEL_DTYPES.get(model_dtype or "")).astype(np.float64).reshape(ref.shape)


def _embedding(index: dict[str, TensorRef], name: str | None) -> TensorRef:
    if name is None:
        found = sorted(n for n in index if n.endswith(EMBED_SUFFIXES))
        if len(found) != 1:
            raise AuditorError(f"cannot tell the input-embedding tensor ({found or 'none found'}): pass --embedding")
        name = found[0]
    if name not in index or len(index[name].shape) != 2:
        raise AuditorError(f"{name}: no such 2-D tensor in the base checkpoint")
    return index[name]


def embedding_scale(config: dict[str, Any]) -> float:
    """The factor the embedding layer applies to a row before noise is added (sqrt(d) for Gemma-style)."""
    if str(config.get("model_type", "")).startswith("gemma") or config.get("scale_embedding"):
        return math.sqrt(float(config.get("hidden_size") or config.get("d_model") or 1))
    return 1.0


def _load_tokenizer(base: Path) -> Any:
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(base)
    except (OSError, ValueError):
        return None


def token_bound(
    cert: Certificate,
    base: Path,
    subs: list[str],
    k: int | None = None,
    candidates: Path | None = None,
    embedding: str | None = None,
) -> TokenResult:
    """Bound every task's smoothed score after the substitutions (or any k of them, worst case)."""
    from auditor.stats import smoothing

    index = model_index(base)
    ref = _embedding(index, embedding)
    # The rows must come from the certified bytes: check every listed file but the other weight shards.
    shard = ref.path.relative_to(base).as_posix()
    needed = {f.path for f in cert.model.files if not f.path.endswith(".safetensors") or f.path == shard}
    hash_base_and_candidate(cert, base, [], base, needed)
    config = read_config(base)
    space, sigma = cert.perturbation.space, cert.perturbation.sigma
    exact = space == "input-embeddings"
    res = TokenResult("EXACT" if exact else "HEURISTIC", space, ref.name, sigma, k or len(subs), [], None)
    if exact:
        res.scale = embedding_scale(config)
    else:
        aliases = tied_aliases(config, set(index))
        perturbed = {aliases.get(n, n) for n in cert.perturbation.parameters}
        if aliases.get(ref.name, ref.name) not in perturbed:
            res.refused = (
                f"the certificate did not perturb {ref.name}: the weight-space token bound needs the "
                "embedding matrix in the perturbed set; no bound applies"
            )
            return res
        if cert.perturbation.scale == "relative":
            res.sigma = _embedding_sigma(cert, ref, aliases)
        if ref.name in aliases.values():
            res.warnings.append(
                f"{ref.name} is tied to the output layer (tie_word_embeddings): the same change "
                "also moves the output layer, which the heuristic ignores"
            )
    vocab = ref.shape[0]
    tokenizer = _load_tokenizer(base)
    if k is not None:
        return _worst_case(res, cert, ref, k, candidates, tokenizer, exact)
    pairs = [parse_substitution(s) for s in subs]
    ids = [(token_id(o, tokenizer, vocab), token_id(n, tokenizer, vocab)) for o, n in pairs]
    olds = [o for o, _ in ids]
    if not exact and len(set(olds)) != len(olds):
        dup = sorted({o for o in olds if olds.count(o) > 1})
        res.refused = (
            f"replaced tokens repeat (ids {dup}): the heuristic needs distinct replaced tokens "
            "(a two-token counterexample exists otherwise)"
        )
        return res
    uniq = sorted({i for pair in ids for i in pair})
    rows = res.scale * read_rows(ref, uniq, cert.model.dtype)  # only the rows involved are read
    local = [(uniq.index(o), uniq.index(n)) for o, n in ids]
    # One norm per substitution (for the table, and for positions in EXACT mode, where a token may be
    # substituted at several positions); the heuristic's distinct-token rule was checked above.
    dist = [float(smoothing.token_delta_norm(rows, [pair])) for pair in local]
    res.delta_norm = (
        float(smoothing.token_delta_norm(rows, local)) if not exact else float(np.sqrt(np.sum(np.square(dist))))
    )
    res.substitutions = [
        {"old": o, "new": n, "old_id": a, "new_id": b, "distance": d}
        for (o, n), (a, b), d in zip(pairs, ids, dist, strict=True)
    ]
    _judge(res, cert)
    return res


def _embedding_sigma(cert: Certificate, ref: TensorRef, aliases: dict[str, str]) -> float:
    """sigma_E = sigma * RMS(E) of the embedding matrix, its RMS recomputed from the certified bytes.

    Sound for relative noise: the heuristic's change lies in the embedding matrix alone, where the noise
    std is the one constant sigma_E, so ||Sigma^-1/2 Delta|| = ||Delta|| / sigma_E and the whitened
    bound Phi(Phi^-1(p_lower) - ||Delta|| / sigma_E) is the absolute one with sigma_E for sigma.
    """
    from auditor.gate.trust import check_tensor_rms

    rms = cert.perturbation.tensor_rms or {}
    canon = aliases.get(ref.name, ref.name)
    names = {n for n in rms if aliases.get(n, n) == canon}
    if not names:
        raise AuditorError(f"certificate: field 'perturbation.tensor_rms' has no entry for {ref.name}")
    check_tensor_rms(cert, {canon: ref}, Path("certificate"), aliases, names)
    return cert.perturbation.sigma * rms[sorted(names)[0]]


def _judge(res: TokenResult, cert: Certificate) -> None:
    from auditor.stats import smoothing

    assert res.delta_norm is not None
    for t in cert.tasks:
        b = float(smoothing.strong_bound(t.p_lower, res.delta_norm, res.sigma))
        res.tasks.append(
            {"name": t.name, "p_lower": t.p_lower, "target": t.target, "bound": b, "certified": b >= t.target}
        )


def _worst_case(
    res: TokenResult,
    cert: Certificate,
    ref: TensorRef,
    k: int,
    candidates: Path | None,
    tokenizer: Any,
    exact: bool,
) -> TokenResult:
    from auditor.stats import smoothing

    if k < 1:
        raise AuditorError("--k must be at least 1")
    allowed = None
    if candidates is not None:
        try:
            lines = [ln.rstrip("\n") for ln in candidates.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except OSError as exc:
            raise AuditorError(f"{candidates}: cannot read candidate tokens ({exc})") from exc
        allowed = sorted({token_id(t, tokenizer, ref.shape[0]) for t in lines})
    full = res.scale * read_matrix(ref, cert.model.dtype)
    if exact:  # k positions may reuse one token: the worst is k times the single worst substitution
        norm = float(np.sqrt(k)) * float(smoothing.worst_case_token_delta_norm(full, allowed, 1))
    else:  # k distinct replaced tokens (the heuristic's requirement)
        if allowed is not None and k > len(allowed):
            raise AuditorError(f"--k {k}: only {len(allowed)} distinct candidate tokens")
        norm = float(smoothing.worst_case_token_delta_norm(full, allowed, k))
    res.delta_norm = norm
    res.worst_case = {
        "k": k,
        "replaced_from": f"{len(allowed)} candidates" if allowed is not None else "any token",
        "replaced_by": "any token",
        "distinct": not exact,
    }
    _judge(res, cert)
    return res
