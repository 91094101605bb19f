"""||Delta W|| of a PEFT LoRA adapter, from r x r Gram matrices (no dense Delta W is ever built).

For Delta W = s * B @ A, ||Delta W||_F^2 = trace((B^T B)(A A^T)): two r x r products, so a rank-16
adapter on a 7B model costs milliseconds. s = lora_alpha / r (lora_alpha / sqrt(r) with rslora),
per module from rank_pattern / alpha_pattern. Full tensors the adapter saves (modules_to_save,
embedding layers, biases) replace base tensors: their Delta is new - base, streamed like a checkpoint.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from auditor.certificate.schema import Certificate
from auditor.errors import AuditorError, CheckpointError
from auditor.gate.candidate import adapter_key_blockers, adapter_weights, folder_blockers, peft_expected
from auditor.gate.radius import (
    GateResult,
    candidate_files,
    hash_base_and_candidate,
    judge,
    outside_blocker,
    read_config,
    refuse_pickles,
    tied_aliases,
)
from auditor.gate.trust import check_dimension, check_tensor_rms
from auditor.model.tensor_stream import (
    CHUNK_BYTES,
    DeltaStats,
    TensorRef,
    as_floats,
    model_index,
    safetensors_refs,
    stream_delta,
)

PREFIX = "base_model.model."
_LORA = re.compile(r"^(?P<mod>.+)\.lora_(?:embedding_)?(?P<ab>[AB])(?:\.[^.]+)?(?:\.weight)?$")
# Config switches whose Delta W is not s * B @ A (or that rewrite the base weights): refused, not guessed.
_UNSUPPORTED = [
    "use_dora",
    "lora_bias",
    "trainable_token_indices",
    "target_parameters",
    "alora_invocation_tokens",
    "layer_replication",
    "use_qalora",
    "use_bdlora",
    "arrow_config",
    "monteclora_config",
    "kasa_config",
]
_BASE_REWRITING_INIT = ("pissa", "olora", "corda", "eva", "loftq", "lora_ga")


@dataclass
class LowRank:
    """Delta W = left @ right (scale folded into left), shaped like the base weight flattened to 2-D."""

    left: np.ndarray
    right: np.ndarray
    scale: float
    rank: int

    def squared_norm(self) -> float:
        # ||L R||_F^2 = trace((L^T L)(R R^T)); both Grams are r x r and symmetric.
        g = (self.left.T @ self.left) * (self.right @ self.right.T)
        return max(0.0, float(g.sum()))


@dataclass
class Adapter:
    """A PEFT LoRA adapter read from disk: low-rank updates and full replacement tensors, by base name."""

    root: Path
    config: dict[str, Any]
    lowrank: dict[str, LowRank] = field(default_factory=dict)
    full: dict[str, TensorRef] = field(default_factory=dict)


def _pattern_key(patterns: dict[str, Any], key: str) -> str | None:
    # peft's rule: a pattern matches a module name when it matches a dotted suffix of it.
    return next((p for p in patterns if re.match(rf"(.*\.)?({p})$", key)), None)


def lora_scale(config: dict[str, Any], module: str, rank: int) -> float:
    """s for one module: alpha / r, or alpha / sqrt(r) with rslora, after rank/alpha patterns."""
    rp, ap = config.get("rank_pattern") or {}, config.get("alpha_pattern") or {}
    r = rp.get(_pattern_key(rp, module), config.get("r", 8))
    alpha = ap.get(_pattern_key(ap, module), config.get("lora_alpha", 8))
    if r != rank:
        raise CheckpointError(f"adapter module {module}: config says rank {r}, its tensors have rank {rank}")
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def read_adapter_config(root: Path) -> dict[str, Any]:
    path = root / "adapter_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable adapter config ({exc})") from exc
    if config.get("peft_type") != "LORA":
        raise CheckpointError(f"{path}: peft_type {config.get('peft_type')!r}: only LoRA adapters can be gated")
    for key in _UNSUPPORTED:
        if config.get(key):
            raise CheckpointError(f"{path}: {key} is set: that adapter's Delta W is not s*B*A; not supported")
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(_BASE_REWRITING_INIT):
        raise CheckpointError(
            f"{path}: init_lora_weights={init!r} rewrites the base weights; convert the adapter to a plain LoRA first"
        )
    return config


def read_adapter(root: Path) -> Adapter:
    """Parse adapter_config.json + adapter_model.safetensors (pickle adapters are refused)."""
    if not root.is_dir():
        raise CheckpointError(f"{root}: adapter directory not found")
    refuse_pickles(root)
    weights = adapter_weights(root)
    config = read_adapter_config(root)
    refs = safetensors_refs(weights)
    pairs: dict[str, dict[str, TensorRef]] = {}
    adapter = Adapter(root, config)
    for key, ref in refs.items():
        if not key.startswith(PREFIX):
            raise CheckpointError(f"{weights}: tensor {key}: not a PEFT name (expected prefix {PREFIX!r})")
        name = key[len(PREFIX) :]
        if m := _LORA.match(name):
            if not key.endswith(("weight", "_A", "_B")) or ".lora_B.bias" in key:
                raise CheckpointError(f"{weights}: tensor {key}: LoRA bias is not supported")
            pairs.setdefault(m["mod"], {})[m["ab"]] = ref
        elif "lora_" in name or "token_adapter" in name:
            raise CheckpointError(f"{weights}: tensor {key}: unsupported adapter tensor")
        else:  # a full tensor that replaces the base's (modules_to_save, saved embeddings, biases)
            base = re.sub(r"\.modules_to_save\.[^.]+\.", ".", name).replace(".base_layer.", ".")
            if base in adapter.full:
                raise CheckpointError(f"{weights}: two tensors replace {base}")
            adapter.full[base] = TensorRef(base, ref.path, ref.offset, ref.nbytes, ref.dtype, ref.shape)
    for module, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise CheckpointError(f"{weights}: module {module} has lora_{''.join(ab)} without its pair")
        adapter.lowrank[module + ".weight"] = _lowrank(module, ab["A"], ab["B"], config, weights)
    return adapter


def _matrix(ref: TensorRef) -> np.ndarray:
    with open(ref.path, "rb") as f:
        f.seek(ref.offset)
        data = f.read(ref.nbytes)
    if len(data) != ref.nbytes:
        raise CheckpointError(f"{ref.path}: truncated while reading tensor {ref.name}")
    x = as_floats(data, ref.dtype).astype(np.float64)
    if not np.isfinite(x).all():
        raise CheckpointError(f"{ref.path}: tensor {ref.name} is not finite (NaN or inf)")
    return x.reshape(ref.shape)


def _lowrank(module: str, a_ref: TensorRef, b_ref: TensorRef, config: dict[str, Any], where: Path) -> LowRank:
    a, b = _matrix(a_ref), _matrix(b_ref)
    embedding = "lora_embedding_" in a_ref.name
    # Linear/conv: A is (r, in, ...), B is (out, r, ...). Embedding: A is (r, vocab), B is (dim, r).
    rank = a.shape[0]
    if b.size != b.shape[0] * rank or a.size % rank:
        raise CheckpointError(
            f"{where}: module {module}: lora_A {list(a.shape)} and lora_B {list(b.shape)} do not form a rank-r product"
        )
    s = lora_scale(config, module, rank)
    a2, b2 = a.reshape(rank, -1), b.reshape(b.shape[0], rank)
    if embedding or config.get("fan_in_fan_out"):  # Delta W is stored transposed: (B A)^T = A^T B^T
        return LowRank(s * a2.T, b2.T, s, rank)
    return LowRank(s * b2, a2, s, rank)


def lora_delta(
    adapter: Adapter,
    perturbed: set[str],
    base_index: dict[str, TensorRef] | None,
    model_dtype: str | None,
    chunk: int = CHUNK_BYTES,
) -> DeltaStats:
    """||Delta||^2 per changed base parameter; adapted parameters outside `perturbed` are listed apart."""
    t0 = time.perf_counter()
    stats = DeltaStats()
    if adapter.full:
        if base_index is None:
            raise CheckpointError(f"{adapter.root}: the adapter replaces full tensors: the base model is needed")
        missing = sorted(set(adapter.full) - set(base_index))
        if missing:
            raise CheckpointError(f"{adapter.root}: adapter replaces {missing[0]}, which the base does not have")
        for n, ref in adapter.full.items():
            b = base_index[n]
            if (ref.shape, ref.dtype) != (b.shape, b.dtype):
                raise CheckpointError(
                    f"adapter tensor {n}: {list(ref.shape)} {ref.dtype} vs base {list(b.shape)} {b.dtype}"
                )
        pairs = [(n, base_index[n], ref) for n, ref in sorted(adapter.full.items())]
        both = {n: (lr.left, lr.right) for n, lr in adapter.lowrank.items() if n in adapter.full}
        stream_delta(pairs, perturbed, model_dtype, both, chunk, stats)
    for n, lr in sorted(adapter.lowrank.items()):
        if base_index is not None:
            if n not in base_index:
                raise CheckpointError(f"{adapter.root}: adapter targets {n}, which the base does not have")
            shape = base_index[n].shape
            if (shape[0], math.prod(shape[1:])) != (lr.left.shape[0], lr.right.shape[1]):
                raise CheckpointError(
                    f"adapter for {n} is {lr.left.shape[0]}x{lr.right.shape[1]}, the base tensor is {list(shape)}"
                )
        if n in adapter.full:
            continue  # already counted with its replacement tensor
        sq = lr.squared_norm()
        if n in perturbed:
            stats.squared[n] = sq
        elif sq > 0:
            stats.changed_outside.append(n)
    stats.seconds = time.perf_counter() - t0
    return stats


def gate_lora(cert: Certificate, adapter_dir: Path, base: Path | None, chunk: int = CHUNK_BYTES) -> GateResult:
    """Gate a LoRA adapter against the certified base (the base is optional for a pure LoRA)."""
    t0 = time.perf_counter()
    if cert.perturbation.space != "weights":
        raise AuditorError(
            "this certificate smooths input embeddings: it certifies token substitutions "
            "(auditor tokens), not weight changes"
        )
    adapter = read_adapter(adapter_dir)
    notes = [
        "the bound is for the merged weights theta0 + s*B*A (an unmerged adapter computes the same "
        "function up to floating-point rounding)"
    ]
    if base is None:
        raise CheckpointError(
            f"{adapter_dir}: the certified base model is needed to read the adapter as peft will (--base)"
        )
    perturbed = set(cert.perturbation.parameters)
    # s*B*A does not depend on the base weights: a pure LoRA needs only the base's (certified) config.
    # relative noise: sigma_k comes from the base tensors, so the whole base is checked too
    only = None if adapter.full or cert.perturbation.scale != "absolute" else {"config.json"}
    base_files, cand_files = hash_base_and_candidate(cert, base, candidate_files(adapter_dir), adapter_dir, only)
    if only:
        notes.append("pure LoRA: only the base's config.json was checked against the certificate")
    weights = adapter_dir / "adapter_model.safetensors"
    blockers = folder_blockers(cert, adapter_dir, cand_files, {weights.name}, base, "lora")
    held = {k: r.shape for k, r in safetensors_refs(weights).items()}
    blockers += adapter_key_blockers(peft_expected(base, adapter_dir), held, weights)
    base_index = model_index(base)
    aliases = tied_aliases(read_config(base), set(base_index))
    for alias, canon in aliases.items():  # one tensor under two names: the adapter may use either
        base_index.setdefault(alias, base_index[canon])
        perturbed = {canon if n == alias else n for n in perturbed}
    numel = {n: r.numel for n, r in base_index.items()}
    check_dimension(cert, numel, Path("certificate"), perturbed)
    check_tensor_rms(cert, base_index, Path("certificate"), aliases)
    t1 = time.perf_counter()
    delta = lora_delta(adapter, perturbed, base_index, cert.model.dtype, chunk)
    changed = {n for n, v in delta.squared.items() if v > 0} | set(delta.changed_outside)
    untied = sorted(changed & (set(aliases) | set(aliases.values())))
    if untied:  # peft applies the update to one use of the tied matrix only
        blockers.append(
            f"adapter changes {', '.join(untied)}, tied to the other embedding: that unties them, "
            "which the certificate (one tied parameter) does not cover"
        )
    if delta.changed_outside:
        blockers.append(outside_blocker(sorted(delta.changed_outside)))
    tasks, verdict, reasons, norm = judge(cert, delta, blockers, aliases)
    cfg = adapter.config
    details = {
        "adapter": {
            "base_model_name_or_path": cfg.get("base_model_name_or_path"),
            "r": cfg.get("r"),
            "lora_alpha": cfg.get("lora_alpha"),
            "use_rslora": bool(cfg.get("use_rslora")),
            "modules": {n: {"rank": lr.rank, "scale": lr.scale} for n, lr in adapter.lowrank.items()},
            "replaced_tensors": sorted(adapter.full),
        }
    }
    timings = {"digests_s": t1 - t0, "delta_s": delta.seconds, "total_s": time.perf_counter() - t0}
    return GateResult(
        "lora",
        cert,
        base,
        adapter_dir,
        delta,
        tasks,
        verdict,
        reasons,
        notes,
        base_files,
        cand_files,
        timings,
        details,
        certified_norm=norm,
    )


def merge_adapter(base: Path, adapter_dir: Path, out: Path) -> Path:
    """Write base + adapter merged into a full safetensors checkpoint (to certify the candidate itself)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    read_adapter(adapter_dir)  # the same refusals as the gate (pickles, unsupported variants)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, use_safetensors=True)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out
