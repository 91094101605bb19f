"""The GO basin bench runs end to end in --quick mode and writes its table, raw numbers and figures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bench import go_basin as bench


def test_quick_run_writes_the_report(tmp_path) -> None:
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--quick", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    text = (tmp_path / "go_basin.md").read_text(encoding="utf-8")
    for label in ("certified edge σ*", "p_lower at σ_fix", "forgetting", "GO ×", "SAM ×"):
        assert label in text
    raw = json.loads((tmp_path / "go_basin.json").read_text(encoding="utf-8"))
    assert len(raw["runs"]) == 2 and set(raw["runs"][0]["metrics"]) == {"adamw", "sam", "go"}
    for name in ("basin.png", "slices.png", "forgetting.png"):
        assert (tmp_path / name).stat().st_size > 1000
    assert [row[0] for row in raw["runs"][0]["forgetting"]["go"]] == [0, 1, 2, 4]  # start .. end


def test_the_batched_scorer_agrees_with_greedy_decoding() -> None:
    args = bench.parse(["--quick"])
    model = bench.make_model(args, 0).eval()
    rows = torch.from_numpy(bench.make_split("+", 16, 0).test)
    fast = bench.correct(model, rows)
    with torch.no_grad():
        out = model.generate(rows[:, : bench.PROMPT_LEN], max_new_tokens=bench.ANSWER_LEN, do_sample=False)
    slow = (out[:, bench.PROMPT_LEN :] == rows[:, bench.PROMPT_LEN :]).all(-1).numpy().astype(np.uint8)
    assert np.array_equal(fast, slow)
    task = bench.scorer_task("addition", rows)
    assert np.array_equal(task.evaluate(model, None, range(16), 16), fast)
    assert [task.scorer(model, i) for i in range(16)] == fast.tolist()


def test_fixed_sequence_stops_at_the_first_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    args = bench.parse(["--quick"])
    args.threshold = 0.5
    values = iter([0.9, 0.6, 0.4, 0.8])
    monkeypatch.setattr(bench, "certify", lambda *a, **k: next(values))
    edge, curve = bench.basin_edge(None, None, [0.01, 0.02, 0.03, 0.04], 0, args)
    assert edge == 0.02 and curve == [0.9, 0.6, 0.4, 0.8]  # 0.04 passes but comes after a failure
