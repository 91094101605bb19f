"""LoRA gate: Gram-matrix ||Delta W|| against peft's own dense merge on the tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_model
from factories import make_certificate

from auditor.errors import CheckpointError
from auditor.gate.lora import LowRank, gate_lora, lora_scale, read_adapter

peft = pytest.importorskip("peft")


def base_dir(tmp_path: Path, tie: bool) -> tuple[torch.nn.Module, Path]:
    model = make_model(tie=tie)
    path = tmp_path / "base"
    model.save_pretrained(path, safe_serialization=True)
    return model, path


def cert_for(model, path: Path, names: list[str]):
    params = dict(model.named_parameters())
    return make_certificate(
        model_dir=path,
        parameters=names,
        sigma=0.05,
        p_lower=0.8,
        dimension=sum(params[n].numel() for n in names),
    )


def make_adapter(model, out: Path, seed: int = 1, randomise: bool = True, **config) -> dict[str, torch.Tensor]:
    """Save a real peft adapter (its zero factor randomised); return peft's dense merge deltas."""
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    pm = peft.get_peft_model(model, peft.LoraConfig(**config))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if randomise and ("lora_B" in n or "lora_embedding_A" in n):  # the factor peft sets to zero
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
            if "modules_to_save" in n:
                p.add_(1e-3 * torch.randn(p.shape, generator=gen))
    pm.save_pretrained(out)
    merged = pm.merge_and_unload().state_dict()
    return {k: merged[k].double() - before[k].double() for k in before}


def dense_norm(deltas: dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float((d * d).sum()) for d in deltas.values()))


def test_gram_equals_dense_product():
    rng = np.random.default_rng(0)
    lr = LowRank(rng.standard_normal((50, 4)), rng.standard_normal((4, 30)), 1.0, 4)
    assert lr.squared_norm() == pytest.approx(np.linalg.norm(lr.left @ lr.right) ** 2, rel=1e-12)


def test_plain_lora_matches_peft_merge(tmp_path):
    model, base = base_dir(tmp_path, tie=True)
    names = [n for n, _ in model.named_parameters() if "q_proj" in n or "v_proj" in n]
    cert = cert_for(model, base, names)
    deltas = make_adapter(model, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    result = gate_lora(cert, tmp_path / "adapter", base)
    assert dense_norm(deltas) > 0
    assert result.delta.norm == pytest.approx(dense_norm(deltas), rel=1e-6)  # merge is rounded to fp32
    assert set(result.delta.squared) == set(names)
    for n in names:
        assert math.sqrt(result.delta.squared[n]) == pytest.approx(float(deltas[n].norm()), rel=1e-6)
    assert result.details["adapter"]["modules"][names[0]]["scale"] == 2.0  # alpha / r
    # Without the base there is no telling which modules peft would create: refused.
    with pytest.raises(CheckpointError, match="--base"):
        gate_lora(cert, tmp_path / "adapter", None)
    # s*B*A does not depend on the base weights: only the base's config is checked, not its weights.
    assert [f.path for f in result.base_files] == ["config.json"]


def test_rslora_patterns_embedding_and_modules_to_save_match_peft_merge(tmp_path):
    model, base = base_dir(tmp_path, tie=False)
    names = [n for n, _ in model.named_parameters() if "self_attn" in n or "embed" in n or "lm_head" in n]
    cert = cert_for(model, base, names)
    deltas = make_adapter(
        model,
        tmp_path / "adapter",
        r=4,
        lora_alpha=8,
        use_rslora=True,
        target_modules=["q_proj", "v_proj", "embed_tokens"],
        modules_to_save=["lm_head"],
        rank_pattern={"layers.1.self_attn.q_proj": 2},
        alpha_pattern={"v_proj": 3},
    )
    result = gate_lora(cert, tmp_path / "adapter", base)
    assert float(deltas["model.embed_tokens.weight"].norm()) > 0 and float(deltas["lm_head.weight"].norm()) > 0
    assert result.delta.norm == pytest.approx(dense_norm(deltas), rel=1e-6)
    modules = result.details["adapter"]["modules"]
    assert modules["model.layers.1.self_attn.q_proj.weight"] == {
        "rank": 2,
        "scale": pytest.approx(8 / math.sqrt(2)),
    }
    assert modules["model.layers.0.self_attn.v_proj.weight"]["scale"] == pytest.approx(1.5)  # 3 / sqrt(4)
    assert "lm_head.weight" in result.details["adapter"]["replaced_tensors"]
    assert "model.safetensors" in {f.path for f in result.base_files}  # replaced tensors need the base
    with pytest.raises(CheckpointError, match="base model is needed"):
        gate_lora(cert, tmp_path / "adapter", None)


def test_scale_follows_peft_pattern_rule():
    cfg = {
        "r": 8,
        "lora_alpha": 16,
        "rank_pattern": {"q_proj": 4},
        "alpha_pattern": {r"layers\.1\..*v_proj": 2},
    }
    assert lora_scale(cfg, "model.layers.0.self_attn.q_proj", 4) == 4.0
    assert lora_scale(cfg, "model.layers.1.self_attn.v_proj", 8) == 0.25
    assert lora_scale(cfg, "model.layers.0.self_attn.v_proj", 8) == 2.0
    with pytest.raises(CheckpointError, match="rank"):
        lora_scale(cfg, "model.layers.0.self_attn.k_proj", 4)


def test_adapted_module_outside_the_perturbed_set_is_not_certifiable(tmp_path):
    model, base = base_dir(tmp_path, tie=True)
    names = [n for n, _ in model.named_parameters() if "q_proj" in n]
    cert = cert_for(model, base, names)
    make_adapter(model, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    result = gate_lora(cert, tmp_path / "adapter", base)
    assert result.verdict == "not certifiable"
    assert "model.layers.0.self_attn.v_proj.weight" in result.delta.changed_outside
    assert "v_proj" in result.reasons[0]


def test_untrained_adapter_is_zero_and_passes(tmp_path):
    model, base = base_dir(tmp_path, tie=True)
    cert = cert_for(model, base, [n for n, _ in model.named_parameters() if "q_proj" in n])
    make_adapter(model, tmp_path / "adapter", randomise=False, r=4, lora_alpha=8, target_modules=["q_proj"])
    result = gate_lora(cert, tmp_path / "adapter", base)
    assert result.delta.norm == 0.0 and result.verdict == "pass"


def test_lora_on_a_tied_embedding_unties_it(tmp_path):
    model, base = base_dir(tmp_path, tie=True)
    cert = cert_for(model, base, [n for n, _ in model.named_parameters()])
    make_adapter(model, tmp_path / "adapter", r=4, lora_alpha=8, target_modules=["embed_tokens"])
    result = gate_lora(cert, tmp_path / "adapter", base)
    assert result.verdict == "not certifiable" and "unties" in result.reasons[0]


def test_pickle_and_unsupported_adapters_are_refused(tmp_path):
    model, base = base_dir(tmp_path, tie=True)
    cert = cert_for(model, base, [n for n, _ in model.named_parameters() if "q_proj" in n])
    adapter = tmp_path / "adapter"
    make_adapter(model, adapter, r=4, lora_alpha=8, target_modules=["q_proj"])
    (adapter / "adapter_model.bin").write_bytes(b"\x80\x04.")
    with pytest.raises(CheckpointError, match="adapter_model.bin"):
        gate_lora(cert, adapter, base)
    (adapter / "adapter_model.bin").unlink()
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(CheckpointError, match="use_dora"):
        read_adapter(adapter)
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "init_lora_weights": "pissa"}))
    with pytest.raises(CheckpointError, match="pissa"):
        read_adapter(adapter)
