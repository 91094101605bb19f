"""`auditor landscape` end to end on the tiny model, its exit codes, and the figures in a rendered certificate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_model

from auditor.cli import main


def write_policy(tmp_path: Path, model: Path) -> Path:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"""schema_version: 1
model: {model}
seed: 3
perturbation: {{sigma: 0.01, include: ["model.layers.*"]}}
sampling: {{batch_size: 8}}
tasks:
  - {{name: choice, source: builtin:choice, oracle: {{type: choice}}, limit: 8}}
landscape: {{grid: [0.05, 0.2], random_directions: 2, worst_steps: 2, strict_scale: 0.05, strict_directions: 3}}
""",
        encoding="utf-8",
    )
    return policy


@pytest.fixture
def candidate(tmp_path, tiny_model_dir, tiny_tokenizer):
    model = make_model()
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.mul_(1.5)
    path = tmp_path / "ft"
    model.save_pretrained(path, safe_serialization=True)
    return path


def test_landscape_writes_points_edges_and_figures(tmp_path, tiny_model_dir, candidate, capsys):
    policy = write_policy(tmp_path, tiny_model_dir)
    out = tmp_path / "land"
    rc = main(["landscape", str(policy), "--candidate", str(candidate), "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    data = json.loads((out / "landscape.json").read_text())
    families = {p["family"] for p in data["points"]}
    assert families == {"random", "worst", "sft"}
    (sft,) = [d for d in data["directions"] if d["family"] == "sft"]
    assert any(p["a"] == sft["scale_of_candidate"] for p in data["points"] if p["family"] == "sft")
    assert len(data["strict"]) == 1 and data["strict"][0]["directions"] == 3
    assert data["dimension"] < sum(p.numel() for p in make_model().parameters())  # include: layers only
    assert len((out / "points.jsonl").read_text().splitlines()) == len(data["points"])
    for ext in ("png", "svg"):
        assert (out / f"landscape-choice.{ext}").stat().st_size > 1000
    shown = capsys.readouterr().out
    assert "basin edges" in shown and "strict basin" in shown


@pytest.mark.parametrize(
    "args, message",
    [
        (["--directions", "sft"], "--candidate"),
        (["--directions", "random,sideways"], "unknown family"),
        (["--candidate", "nope"], "candidate directory not found"),
    ],
)
def test_landscape_bad_usage_is_exit_2_with_one_line(tmp_path, tiny_model_dir, capsys, args, message):
    policy = write_policy(tmp_path, tiny_model_dir)
    assert main(["landscape", str(policy), "--out", str(tmp_path / "o"), "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_landscape_refuses_a_pickle_candidate(tmp_path, tiny_model_dir, capsys):
    bad = tmp_path / "pickled"
    bad.mkdir()
    torch.save({"w": torch.zeros(1)}, bad / "pytorch_model.bin")
    policy = write_policy(tmp_path, tiny_model_dir)
    rc = main(["landscape", str(policy), "--candidate", str(bad), "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2
    assert "pytorch_model.bin" in capsys.readouterr().err


def test_render_adds_the_landscape_figures(tmp_path, tiny_model_dir, capsys):
    from factories import make_certificate

    policy = write_policy(tmp_path, tiny_model_dir)
    land = tmp_path / "land"
    assert main(["landscape", str(policy), "--directions", "random", "--out", str(land), "--no-progress"]) == 0
    run = tmp_path / "run"
    run.mkdir()
    (run / "certificate.json").write_bytes(make_certificate().canonical_json())
    assert main(["render", str(run), "--landscape", str(land)]) == 0
    html = (run / "certificate.html").read_text()
    assert "Landscape slices" in html and "Strict basin, choice" in html
    assert (run / "certificate.pdf").stat().st_size > 0
    (land / "landscape.json").write_text(
        '{"clean": {"choice": 0.5}, "points": [{"family": "x"}], "grid": [], "tolerance": 0, "dimension": 1}'
    )
    assert main(["render", str(run), "--landscape", str(land)]) == 2
    assert "not a landscape result" in capsys.readouterr().err
