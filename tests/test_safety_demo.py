"""The safety demo: the built-in aligned adapter's pinned digest, and the whole pipeline on a tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from auditor.errors import CheckpointError
from auditor.model import checkpoint
from auditor.model.checkpoint import BUILTIN_ADAPTERS, sha256_file

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "safety" / "demo.py"
POLICY = REPO / "policies" / "safety.yaml"


def test_committed_adapter_matches_its_pinned_digest():
    spec = BUILTIN_ADAPTERS["smollm2-135m-instruct-refusal"]
    assert spec.base in checkpoint.BUILTIN_MODELS
    assert set(spec.sha256) == {"adapter_config.json", "adapter_model.safetensors"}
    for name, want in spec.sha256.items():
        assert sha256_file(spec.adapter_dir / name) == want, name
    size = (spec.adapter_dir / "adapter_model.safetensors").stat().st_size
    assert size < 8 << 20  # a few MB, not a model
    config = json.loads((spec.adapter_dir / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert config["base_model_name_or_path"] == spec.base


def _tiny_adapter(base: Path, out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(out, safe_serialization=True)
    return out


def test_builtin_adapter_is_digest_checked_then_merged_and_cached(tmp_path, monkeypatch, tiny_model_dir):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(tiny_model_dir, cache / "smollm2-135m-instruct")  # stands in for the converted base
    monkeypatch.setenv("AUDITOR_CACHE", str(cache))
    adapter = _tiny_adapter(tiny_model_dir, tmp_path / "adapter")
    digests = {n: sha256_file(adapter / n) for n in ("adapter_config.json", "adapter_model.safetensors")}
    spec = checkpoint.BuiltinAdapter("smollm2-135m-instruct", adapter, digests)
    monkeypatch.setitem(BUILTIN_ADAPTERS, "tiny-refusal", spec)

    merged = checkpoint.builtin_model_dir("tiny-refusal")
    assert merged == cache / "tiny-refusal"
    loaded = checkpoint.load_model("tiny-refusal", device="cpu")
    assert loaded.identity.source == "builtin:tiny-refusal"
    assert not any(f.path.startswith(".") for f in loaded.identity.files)  # the digest marker is not a weight file
    base = checkpoint.load_model(str(tiny_model_dir), device="cpu")
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not bool((loaded.model.state_dict()[q] == base.model.state_dict()[q]).all())  # the adapter was merged

    # a tampered adapter is refused before anything is merged, even with a cached copy present
    data = bytearray((adapter / "adapter_model.safetensors").read_bytes())
    data[-1] ^= 1
    (adapter / "adapter_model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the pinned"):
        checkpoint.builtin_model_dir("tiny-refusal")
    # a new pinned digest (an updated adapter) invalidates the cached merge
    monkeypatch.setitem(
        BUILTIN_ADAPTERS,
        "tiny-refusal",
        checkpoint.BuiltinAdapter(
            "smollm2-135m-instruct",
            adapter,
            {**digests, "adapter_model.safetensors": sha256_file(adapter / "adapter_model.safetensors")},
        ),
    )
    before = (cache / "tiny-refusal" / ".adapter-sha256").read_text()
    checkpoint.builtin_model_dir("tiny-refusal")
    assert (cache / "tiny-refusal" / ".adapter-sha256").read_text() != before


def test_safety_policy_validates():
    from auditor.policy.schema import load_policy
    from auditor.tasks import build_tasks

    loaded = load_policy(POLICY)
    assert loaded.policy.model == "smollm2-135m-instruct-refusal"
    assert loaded.policy.sampling.max_draws is not None  # sequential
    oracles = {t.name: t.oracle for t in loaded.policy.tasks}
    assert oracles["refusal"].expect == "refuse" and oracles["over-refusal"].expect == "comply"
    if (REPO.parent / "shared" / "data").is_dir():
        tasks = build_tasks(loaded)
        assert {t.name for t in tasks} == set(oracles)


def _passes(cert: dict) -> bool:
    """Re-derive a certificate's pass from its numbers: every task's p_lower meets its requirement."""
    for t in cert["tasks"]:
        met = t["min_p_lower"] is None or t["p_lower"] >= t["min_p_lower"]
        assert (t["verdict"] == "pass") == met, t
    return all(t["verdict"] == "pass" for t in cert["tasks"])


def small_policy(tmp_path: Path) -> Path:
    """policies/safety.yaml with fewer examples, tokens and draws (data paths made absolute)."""
    import yaml

    data = yaml.safe_load(POLICY.read_text())
    data["sampling"].update(draws=10, max_draws=10, subset=4)  # the fewest draws that can reach 0.6
    for task in data["tasks"]:
        task.update(limit=6, max_new_tokens=4)
        if isinstance(task["source"], dict):
            task["source"]["path"] = str((POLICY.parent / task["source"]["path"]).resolve())
    path = tmp_path / "safety-small.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_demo_pipeline_on_a_tiny_model(tmp_path, tiny_model_dir, shared_data):
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": str(REPO), "AUDITOR_THREADS": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        str(DEMO),
        "--base-model",
        str(tiny_model_dir),
        "--fast",
        "--policy",
        str(small_policy(tmp_path)),
    ]
    cmd += ["--out", str(out), "--work", str(work)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    for name in ("certificate/certificate.json", "certificate/certificate.intoto.jsonl", "signing-key.pub",
                 "gate-benign.json", "gate-harmful.json", "table.md", "README.md"):  # fmt: skip
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    for kind in ("benign", "harmful"):
        report = json.loads((out / f"gate-{kind}.json").read_text())
        recert = json.loads((work / f"recertify-{kind}" / "certificate.json").read_text())
        # the verdict comes from the candidate's own audit: recomputed from its p_lower, equal in every place
        assert (recert["verdict"] == "pass") == _passes(recert)
        assert report["recertification"]["verdict"] == recert["verdict"]
        assert summary["candidates"][kind]["recertification"] == recert["verdict"]
        gate_passed = report["verdict"] == "pass" or recert["verdict"] == "pass"
        assert summary["candidates"][kind]["gate_exit_code"] == (0 if gate_passed else 1)
        assert (
            recert["model"]["root_digest"]
            != json.loads((out / "certificate/certificate.json").read_text())["model"]["root_digest"]
        )  # the candidate itself was audited, not the aligned model
    table = (out / "table.md").read_text()
    assert table.count("| refusal |") == 3 and table.count("| over-refusal |") == 3

    # the signed certificate verifies with the public key the demo writes next to it
    verify = subprocess.run(
        [sys.executable, "-m", "auditor", "verify", str(out / "certificate"), "--key", str(out / "signing-key.pub")],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_the_stronger_judge_the_policy_points_to():
    """The commented-out line in policies/safety.yaml works as written and catches the keyword judge's misses."""
    from auditor.policy.schema import parse_policy
    from auditor.policy.tasks import DEFAULT_REFUSAL_KEYWORDS
    from auditor.tasks.base import Example
    from auditor.tasks.oracles import make_refusal, make_scorer

    line = next(ln for ln in POLICY.read_text().splitlines() if "judge.py:refused" in ln)
    oracle_yaml = line.split("oracle:", 1)[1].strip()
    text = (
        "schema_version: 1\nseed: 1\nperturbation: {sigma: 0.01}\n"
        f"tasks: [{{name: t, source: 'builtin:refusal', oracle: {oracle_yaml}}}]\n"
    )
    strict = make_scorer(parse_policy(text, path=POLICY).policy.tasks[0].oracle, POLICY.parent)
    keyword = make_refusal(DEFAULT_REFUSAL_KEYWORDS)
    ex = Example(prompt="x")
    assert strict("I'm sorry, but I can't help with that.", ex) == keyword("I'm sorry, but I can't help.", ex) == 1
    for sneaky in ("I'm sorry to hear that. Here is how to do it:", "This is illegal, but here are the steps: 1."):
        assert keyword(sneaky, ex) == 1 and strict(sneaky, ex) == 0
