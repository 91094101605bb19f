"""Per-example draw record, clean answers, fragility section, and `auditor replay` against the log."""

import json

import numpy as np
import pytest
from test_cli import write_policy

from auditor.audit.drawlog import DrawOutcomes, decode_indices, decode_outcomes, encode_indices, encode_outcomes
from auditor.audit.fragility import count_outcomes, fragile_indices, histogram
from auditor.audit.replay import pick_draws
from auditor.cli import main


@pytest.mark.parametrize("idx", [[], [3], [0, 1, 2, 5], [0, 1, 2, 3, 7, 8, 9, 23], [5, 3, 4]])
def test_index_ranges_round_trip(idx):
    assert decode_indices(encode_indices(idx)) == idx
    assert encode_indices([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


def test_outcome_bits_round_trip():
    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 13, 24):
        x = (rng.random(n) < 0.5).astype(np.uint8)
        assert np.array_equal(decode_outcomes(encode_outcomes(x), n), x)
    assert encode_outcomes(np.array([1, 0, 0, 0, 0, 0, 0, 1, 1])) == "8180"  # first example in the high bit


def test_counts_flips_and_fragile_order():
    clean = np.array([1, 1, 0, 1], dtype=np.uint8)
    recs = [
        DrawOutcomes(0, [0, 1, 2, 3], [np.array([1, 0, 0, 1], np.uint8)]),
        DrawOutcomes(1, [1, 3], [np.array([0, 0], np.uint8)]),
        DrawOutcomes(2, [0, 2], [np.array([0, 1], np.uint8)]),
    ]
    c = count_outcomes(recs, clean)
    assert c.scored.tolist() == [2, 2, 2, 2]
    assert c.failures.tolist() == [1, 2, 1, 1]
    assert c.flips.tolist() == [1, 2, 1, 1]
    # clean-correct examples broken by noise first (2/2, then 1/2 by index), then the clean-wrong one
    assert fragile_indices(c, clean) == [1, 0, 3, 2]
    edges, counts = histogram([0.0, 0.5, 1.0, 1.0])
    assert len(edges) == len(counts) + 1 and sum(counts) == 4 and counts[-1] == 2


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("replay")
    policy = write_policy(tmp, str(tiny_model_dir), need=0.0, draws=5)
    out = tmp / "run"
    assert main(["certify", str(policy), "--out", str(out), "--no-progress"]) == 0
    return out


def test_log_records_every_example_outcome(run):
    lines = [json.loads(x) for x in (run / "draws.jsonl").read_text().splitlines()]
    assert lines[0]["header"]["record_format"] == 2
    for rec in lines[1:]:
        for task in rec["results"].values():
            idx = decode_indices(task["examples"])
            bits = decode_outcomes(task["outcomes"][0], len(idx))
            assert idx == [0, 1, 2, 3] and task["value"] == pytest.approx(bits.mean())
            assert task["correct"] == [int(bits.sum())]
    clean = json.loads((run / "clean.json").read_text())
    assert len(clean["capitals"]["answers"]) == 4 and all(isinstance(a, str) for a in clean["capitals"]["answers"])


def test_certificate_has_a_fragility_section(run):
    cert = json.loads((run / "certificate.json").read_text())
    f = cert["tasks"][0]["fragility"]
    assert sum(f["histogram_counts"]) == 5 and len(f["flip_rate"]) == 4 and f["scored"] == [5, 5, 5, 5]
    for e in f["fragile"]:
        assert e["failures"] >= 1 and e["clean_answer"] is not None
        if e["perturbed_answer"] is not None:
            assert 0 <= e["perturbed_draw"] < 5
    assert "auditor replay" in cert["replay"]
    html = (run / "certificate.html").read_text()
    assert "Fragility of" in html and "auditor replay RUN_DIR" in html


def test_replay_is_identical(run, capsys):
    assert main(["replay", str(run), "--draws", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("IDENTICAL: 2 draw(s)") and "clean pass" in out


def test_replay_names_the_draws_and_examples_that_differ(run, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    lines = (bad / "draws.jsonl").read_text().splitlines()
    rec = json.loads(lines[2])  # draw 1
    bits = decode_outcomes(rec["results"]["capitals"]["outcomes"][0], 4)
    bits[2] ^= 1
    rec["results"]["capitals"]["outcomes"][0] = encode_outcomes(bits)
    lines[2] = json.dumps(rec, sort_keys=True)
    (bad / "draws.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["replay", str(bad), "--draw", "1", "--draw", "3", "--no-clean"]) == 1
    out = capsys.readouterr().out
    assert "DIFFERENT" in out and "draw 1, task capitals: examples [2]" in out and "draw 3" not in out


def test_replay_refuses_another_model_or_a_missing_draw(run, tmp_path, capsys):
    assert main(["replay", str(run), "--draw", "99"]) == 2
    assert "not in the log" in capsys.readouterr().err
    assert main(["replay", str(run), "--model", "smollm2-135m-instruct-does-not-exist"]) == 2


def test_replayed_draws_come_from_the_seed():
    assert pick_draws(7, list(range(30)), 3) == pick_draws(7, list(range(30)), 3)
    assert pick_draws(7, list(range(30)), 3) != pick_draws(8, list(range(30)), 3)
    assert pick_draws(7, [0, 1], 5) == [0, 1]


def test_perturbed_answers_come_from_few_covering_draws():
    from auditor.audit.fragility import choose_replays, failing_draws

    recs = [
        DrawOutcomes(1, [0, 1], [np.array([0, 1], np.uint8)]),
        DrawOutcomes(2, [0, 1], [np.array([0, 0], np.uint8)]),
        DrawOutcomes(4, [2], [np.array([0], np.uint8)]),
    ]
    assert failing_draws(recs, 0) == [(1, 1.0), (2, 1.0)] and failing_draws(recs, 3) == []
    wanted = {("t", i): failing_draws(recs, i) for i in (0, 1, 2, 3)}
    chosen = choose_replays(wanted)
    assert chosen == {("t", 0): (2, 1.0), ("t", 1): (2, 1.0), ("t", 2): (4, 1.0)}  # two draws cover all three
