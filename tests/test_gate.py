"""The checkpoint gate: ||Delta|| against a direct torch computation, and every way a candidate is refused."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_model
from factories import make_certificate
from safetensors.torch import load_file, save_file

from auditor.errors import AuditorError, CheckpointError
from auditor.gate.radius import gate_checkpoint
from auditor.model.tensor_stream import as_floats
from auditor.stats import smoothing

ATTN = ("self_attn.q_proj", "self_attn.v_proj")


def save(model: torch.nn.Module, path: Path, **kw) -> Path:
    model.save_pretrained(path, safe_serialization=True, **kw)
    return path


def certify_dir(model: torch.nn.Module, path: Path, names: list[str], sigma=0.05, p_lower=0.8, target=0.5):
    params = dict(model.named_parameters())
    dim = sum(params[n].numel() for n in names)
    return make_certificate(
        model_dir=path, parameters=names, sigma=sigma, p_lower=p_lower, target=target, dimension=dim
    )


def attn_names(model: torch.nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters() if any(a in n for a in ATTN)]


def shift(model: torch.nn.Module, names: list[str], scale: float, seed: int = 1) -> dict[str, torch.Tensor]:
    """Add scale * N(0, 1) to the named parameters in place; return the deltas (float64, as stored)."""
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    deltas = {}
    with torch.no_grad():
        for n in names:
            before = params[n].detach().double().clone()
            params[n].add_(scale * torch.randn(params[n].shape, generator=gen).to(params[n].dtype))
            deltas[n] = params[n].detach().double() - before
    return deltas


def torch_norm(deltas: dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float((d * d).sum()) for d in deltas.values()))


@pytest.fixture
def setup(tmp_path):
    """A certified tiny base (tied embeddings), its certificate over q/v + embeddings, and its model."""
    model = make_model(tie=True)
    base = save(model, tmp_path / "base")
    names = attn_names(model) + ["model.embed_tokens.weight"]
    return model, base, certify_dir(model, base, names), names


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_delta_matches_torch(tmp_path, dtype):
    model = make_model(tie=False).to(dtype)
    base = save(model, tmp_path / "base")
    names = attn_names(model)
    cert = certify_dir(model, base, names)
    deltas = shift(model, names, 1e-3)
    result = gate_checkpoint(cert, save(model, tmp_path / "cand"), base)
    expected = torch_norm(deltas)
    assert expected > 0
    assert result.delta.norm == pytest.approx(expected, rel=1e-12)
    assert result.delta.changed_outside == []
    t = result.tasks[0]
    assert t.strong == pytest.approx(smoothing.strong_bound(0.8, expected, 0.05))
    assert t.radius == pytest.approx(smoothing.certified_radius(0.8, 0.5, 0.05))
    assert result.verdict == ("pass" if expected <= t.radius else "not certified")


def test_small_change_passes_large_change_is_not_certified(setup, tmp_path):
    model, base, cert, names = setup
    radius = smoothing.certified_radius(0.8, 0.5, 0.05)
    small = shift(model, names[:1], 1e-5)
    ok = gate_checkpoint(cert, save(model, tmp_path / "small"), base)
    assert torch_norm(small) < radius and ok.verdict == "pass" and ok.passed
    shift(model, names, 0.05, seed=2)
    far = gate_checkpoint(cert, save(model, tmp_path / "far"), base)
    assert far.delta.norm > radius and far.verdict == "not certified"
    assert far.tasks[0].bound < 0.5


def test_chunking_does_not_change_the_norm(setup, tmp_path):
    model, base, cert, names = setup
    shift(model, names, 1e-3)
    cand = save(model, tmp_path / "cand")
    whole = gate_checkpoint(cert, cand, base).delta.norm
    assert gate_checkpoint(cert, cand, base, chunk=200).delta.norm == pytest.approx(whole, rel=1e-12)


def test_tied_weights_counted_once(setup, tmp_path):
    model, base, cert, _ = setup
    assert "lm_head.weight" not in cert.perturbation.parameters  # named_parameters lists the tied pair once
    deltas = shift(model, ["model.embed_tokens.weight"], 1e-3)
    result = gate_checkpoint(cert, save(model, tmp_path / "cand"), base)
    assert result.delta.norm == pytest.approx(torch_norm(deltas), rel=1e-12)  # not sqrt(2) times it
    assert any("tied" in n for n in result.notes)


def test_tied_copy_stored_twice_must_agree(setup, tmp_path):
    model, base, cert, _ = setup
    cand = save(model, tmp_path / "cand")
    tensors = load_file(cand / "model.safetensors")
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    save_file(tensors, cand / "model.safetensors", metadata={"format": "pt"})
    assert gate_checkpoint(cert, cand, base).delta.norm == 0.0
    tensors["lm_head.weight"][0, 0] += 1.0
    save_file(tensors, cand / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="lm_head.weight"):
        gate_checkpoint(cert, cand, base)


def test_any_bit_outside_the_perturbed_set_is_not_certifiable(setup, tmp_path):
    model, base, cert, _ = setup
    with torch.no_grad():
        w = model.model.norm.weight
        w.view(torch.int32)[3] += 1  # one ulp of one coordinate
    result = gate_checkpoint(cert, save(model, tmp_path / "cand"), base)
    assert result.verdict == "not certifiable" and not result.passed
    assert result.delta.changed_outside == ["model.norm.weight"]
    assert "model.norm.weight" in result.reasons[0]
    assert result.delta.norm == 0.0


def test_sharded_checkpoints(tmp_path):
    model = make_model(tie=False)
    base = save(model, tmp_path / "base", max_shard_size="20KB")
    assert (base / "model.safetensors.index.json").exists()
    names = attn_names(model) + ["lm_head.weight"]
    cert = certify_dir(model, base, names)
    deltas = shift(model, names, 1e-3)
    for cand in (save(model, tmp_path / "sharded", max_shard_size="30KB"), save(model, tmp_path / "single")):
        assert gate_checkpoint(cert, cand, base).delta.norm == pytest.approx(torch_norm(deltas), rel=1e-12)


def test_rounds_to_the_audited_dtype(tmp_path):
    model = make_model(tie=False)
    base = save(model, tmp_path / "base")
    names = attn_names(model)
    cert = certify_dir(model, base, names)
    cert = cert.model_copy(update={"model": cert.model.model_copy(update={"dtype": "bfloat16"})})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    shift(model, names, 1e-3)
    after = dict(model.named_parameters())
    expected = math.sqrt(
        sum(float(((after[n].detach().bfloat16().double() - before[n].bfloat16().double()) ** 2).sum()) for n in names)
    )
    assert gate_checkpoint(cert, save(model, tmp_path / "cand"), base).delta.norm == pytest.approx(expected)


def test_bf16_rounding_matches_torch():
    x = torch.randn(100_000) * torch.logspace(-30, 30, 100_000)
    x[:4] = torch.tensor([1.00390625, 1.01171875, -2.0078125, 3.0])  # exact ties: round to even
    got = as_floats(x.numpy().tobytes(), "F32", "BF16")
    assert np.array_equal(got, x.bfloat16().float().numpy())


def test_base_digest_mismatch_is_an_error(setup, tmp_path):
    model, base, cert, _ = setup
    cand = save(model, tmp_path / "cand")
    data = bytearray((base / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (base / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: sha256 .* differs"):
        gate_checkpoint(cert, cand, base)


def test_input_embedding_certificate_cannot_gate_weights(setup, tmp_path):
    model, base, cert, _ = setup
    cert = cert.model_copy(update={"perturbation": cert.perturbation.model_copy(update={"space": "input-embeddings"})})
    with pytest.raises(AuditorError, match="input embeddings"):
        gate_checkpoint(cert, save(model, tmp_path / "cand"), base)


def _edit(cand: Path, fn) -> None:
    tensors = load_file(cand / "model.safetensors")
    fn(tensors)
    save_file(tensors, cand / "model.safetensors", metadata={"format": "pt"})


def _bad_architecture(cand: Path) -> None:
    config = json.loads((cand / "config.json").read_text())
    config["intermediate_size"] = 48
    (cand / "config.json").write_text(json.dumps(config))


BAD = {
    "shape": (
        lambda c: _edit(c, lambda t: t.update({"model.norm.weight": torch.ones(31)})),
        "model.norm.weight",
    ),
    "dtype": (
        lambda c: _edit(c, lambda t: t.update({"model.norm.weight": t["model.norm.weight"].half()})),
        "model.norm.weight",
    ),
    "nan perturbed": (
        lambda c: _edit(c, lambda t: t["model.layers.0.self_attn.q_proj.weight"].__setitem__((0, 0), float("nan"))),
        "q_proj",
    ),
    "inf outside": (
        lambda c: _edit(c, lambda t: t["model.norm.weight"].__setitem__(0, float("inf"))),
        "model.norm.weight",
    ),
    "pickle": (lambda c: (c / "training_args.bin").write_bytes(b"\x80\x04."), "training_args.bin"),
    "pickle only": (lambda c: (c / "model.safetensors").rename(c / "pytorch_model.bin"), "pytorch_model.bin"),
    "truncated": (
        lambda c: (c / "model.safetensors").write_bytes((c / "model.safetensors").read_bytes()[:-100]),
        "model.safetensors",
    ),
    "garbage": (lambda c: (c / "model.safetensors").write_bytes(b"\xff" * 64), "model.safetensors"),
    "architecture": (_bad_architecture, "intermediate_size"),
    "no config": (lambda c: (c / "config.json").unlink(), "config.json"),
}


@pytest.mark.parametrize(
    "edit, name",
    [
        (lambda t: t.pop("model.layers.1.mlp.up_proj.weight"), "up_proj"),  # the loader would initialise it
        (lambda t: t.update(extra_head=torch.zeros(3)), "extra_head"),  # the loader would drop it
    ],
)
def test_missing_or_extra_tensors_are_not_certifiable(setup, tmp_path, edit, name):
    model, base, cert, _ = setup
    cand = save(model, tmp_path / "cand")
    _edit(cand, edit)
    result = gate_checkpoint(cert, cand, base)
    assert result.verdict == "not certifiable" and any(name in r for r in result.reasons)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_candidates_are_errors_naming_the_tensor_or_file(setup, tmp_path, case):
    model, base, cert, _ = setup
    cand = save(model, tmp_path / "cand")
    breaker, name = BAD[case]
    breaker(cand)
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")) as err:
        gate_checkpoint(cert, cand, base)
    assert "\n" not in str(err.value)


def test_config_and_tokenizer_changes_are_not_certifiable(tmp_path, tiny_tokenizer):
    model = make_model(tie=True)
    base = save(model, tmp_path / "base")
    tiny_tokenizer.save_pretrained(base)
    cert = certify_dir(model, base, attn_names(model))
    cand = tmp_path / "cand"
    shutil.copytree(base, cand)
    config = json.loads((cand / "config.json").read_text())
    config["rms_norm_eps"] = 1e-5
    config["transformers_version"] = "0.0"  # harmless: ignored
    (cand / "config.json").write_text(json.dumps(config))
    result = gate_checkpoint(cert, cand, base)
    assert result.verdict == "not certifiable" and "rms_norm_eps" in result.reasons[0]
    assert "transformers_version" not in result.reasons[0]
    shutil.copy(base / "config.json", cand / "config.json")
    tok = json.loads((cand / "tokenizer_config.json").read_text())
    tok["model_max_length"] = 7
    (cand / "tokenizer_config.json").write_text(json.dumps(tok))
    result = gate_checkpoint(cert, cand, base)
    assert result.verdict == "not certifiable" and "tokenizer_config.json" in result.reasons[0]
