"""What the loader will load from an untrusted candidate folder, and everything else in it.

The gate must measure exactly the weights transformers (full checkpoints) or peft (adapters) will
load, so this module applies their rules, checked against their source:
- transformers `from_pretrained(dir)`: model.safetensors, else the index's shards, else pickles
  (`checkpoint.weight_files`); a `transformers_weights` key in config.json redirects it (a config
  change, refused by the gate's config comparison);
- peft `load_peft_weights`: adapter_model.safetensors, else adapter_model.bin (pickle: refused);
  `set_peft_model_state_dict` loads with strict=False, and `get_peft_model` creates a LoRA on every
  module `target_modules` / `layers_to_transform` / `exclude_modules` select and wraps every
  `modules_to_save` module: what it expects is read off peft itself, on an empty (meta) copy of the
  certified base, never guessed.
Every other file is sorted into documentation (ignored), a weight-bearing file the loader does not
read (not certifiable), or a side file (tokenizer, chat template, generation config, code, ...)
that must match the base's certified digest exactly (else not certifiable, naming it).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

from auditor.certificate.schema import Certificate, FileDigest
from auditor.errors import CheckpointError

# Suffixes of files that hold weights in some framework (safetensors, pickles, TF, Flax, GGUF, ONNX, ...).
WEIGHT_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".pkl",
    ".pickle",
    ".h5",
    ".msgpack",
    ".gguf",
    ".ggml",
    ".npz",
    ".npy",
    ".onnx",
    ".pb",
    ".tflite",
    ".ot",
    ".safetensors.index.json",
    ".bin.index.json",
    ".h5.index.json",
    ".msgpack.index.json",
)
# Compared field by field, not as side files (a config.json inside an adapter folder is a side file).
CONFIG_FILES = {"checkpoint": "config.json", "lora": "adapter_config.json"}


def is_documentation(rel: str) -> bool:
    """Files no loader reads: top-level README/LICENSE/NOTICE and *.md, and top-level hidden entries
    (.gitattributes, .cache/). Only at the top: transformers globs `additional_chat_templates/*.jinja`,
    which matches hidden and README-named files alike."""
    parts = rel.split("/")
    if parts[0].startswith("."):
        return True
    name = parts[-1]
    return len(parts) == 1 and (name.upper().startswith(("README", "LICENSE", "NOTICE")) or name.endswith(".md"))


def is_weight_bearing(rel: str) -> bool:
    return rel.lower().endswith(WEIGHT_SUFFIXES)


def _json_content(data: bytes) -> Any:
    # JSON side files compare by content without the version stamp transformers writes on save.
    try:
        parsed = json.loads(data)
    except ValueError:
        return None
    if isinstance(parsed, dict):
        parsed.pop("transformers_version", None)
    return parsed


def _same_side_file(rel: str, cand_root: Path, base: Path | None, digest: str, certified: str) -> bool:
    if digest == certified:
        return True
    if base is None or not rel.endswith(".json"):
        return False
    try:
        base_bytes = (base / rel).read_bytes()
        a, b = _json_content((cand_root / rel).read_bytes()), _json_content(base_bytes)
    except OSError:
        return False
    # only the certified base file's content counts (an adapter's base side files are not hashed otherwise)
    return hashlib.sha256(base_bytes).hexdigest() == certified and a is not None and a == b


def folder_blockers(
    cert: Certificate,
    cand_root: Path,
    cand_files: list[FileDigest],
    loaded: set[str],
    base: Path | None,
    kind: str,
) -> list[str]:
    """Why the folder holds more (or less) than the weights the gate measures: one reason per file class."""
    certified = {f.path: f.sha256 for f in cert.model.files}
    config = CONFIG_FILES[kind]
    stray, added, changed = [], [], []
    for f in cand_files:
        rel = f.path
        if rel in loaded or rel == config or is_documentation(rel):
            continue
        if is_weight_bearing(rel):
            stray.append(rel)
        elif rel not in certified:
            added.append(rel)
        elif not _same_side_file(rel, cand_root, base, f.sha256, certified[rel]):
            changed.append(rel)
    present = {f.path for f in cand_files}
    removed = []
    if kind == "checkpoint":  # an adapter folder need not repeat the base's tokenizer files
        removed = sorted(
            rel
            for rel in certified
            if rel not in present
            and not is_weight_bearing(rel)
            and rel not in CONFIG_FILES
            and not is_documentation(rel)
        )
    reads = ", ".join(sorted(loaded))
    out = []
    if stray:
        out.append(
            f"{_few(stray)}: weight file(s) the loader does not read (it reads {reads}): what they hold is not "
            "measured, and another loader may read them"
        )
    for what, names in (("added", added), ("changed", changed), ("removed", removed)):
        if names:
            out.append(
                f"{_few(names)}: {what} against the base's certified files (tokenizer, chat template, generation "
                "and code files change the model's behaviour; the certificate covers the base's only)"
            )
    return out


def _few(names: list[str], k: int = 4) -> str:
    return ", ".join(names[:k]) + (f" (+{len(names) - k} more)" if len(names) > k else "")


def adapter_weights(root: Path) -> Path:
    """The file peft loads from an adapter folder (safetensors first; pickles are refused earlier)."""
    path = root / "adapter_model.safetensors"
    if path.is_file():
        return path
    if (root / "adapter_model.bin").exists():
        raise CheckpointError(f"{root / 'adapter_model.bin'}: pickle adapter weights: refused (never unpickled)")
    raise CheckpointError(f"{path}: missing: peft would refuse to load this adapter")


def peft_expected(base: Path, adapter_dir: Path) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} that peft saves for (and loads into) this adapter config on this base.

    Built on an empty meta-device model from the certified base's config.json (no weights read, no
    code from the candidate run); a config peft itself rejects is an error (exit 2).
    """
    import peft
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = AutoConfig.from_pretrained(base, trust_remote_code=False)
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
            pconf = peft.PeftConfig.from_pretrained(str(adapter_dir))
            pconf.inference_mode = True
            wrapped = peft.get_peft_model(model, pconf)
            state = peft.get_peft_model_state_dict(wrapped)
    except (ValueError, TypeError, KeyError, AttributeError, RuntimeError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{adapter_dir / 'adapter_config.json'}: peft would refuse this adapter ({first})"
        ) from exc
    return {k: tuple(v.shape) for k, v in state.items()}


def adapter_key_blockers(
    expected: dict[str, tuple[int, ...]], held: dict[str, tuple[int, ...]], weights: Path
) -> list[str]:
    """Tensors peft would create but the file lacks (left at peft's init) or that it would not load."""
    for k in sorted(set(expected) & set(held)):
        if expected[k] != held[k]:  # peft's load_state_dict raises on a size mismatch
            raise CheckpointError(
                f"{weights}: tensor {k} has shape {list(held[k])}, peft expects {list(expected[k])}: "
                "peft would refuse this adapter"
            )
    out = []
    missing, unexpected = sorted(set(expected) - set(held)), sorted(set(held) - set(expected))
    if missing:
        out.append(
            f"adapter_config.json makes peft create {_few(missing)}, which {weights.name} does not hold: "
            "peft would initialise them itself (weights the gate cannot measure)"
        )
    if unexpected:
        out.append(
            f"{weights.name} holds {_few(unexpected)}, which match no module peft creates for this config "
            "(not loaded by peft, or loaded into a base parameter by name): not measured"
        )
    return out
