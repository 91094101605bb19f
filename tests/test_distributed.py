"""Draws sharded over torch.distributed ranks give the certificate of one process.

The in-process tests drive rank 0's consumer against simulated ranks; the CLI tests launch real
gloo process groups with `python -m torch.distributed.run` (the torchrun entry point).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from auditor.audit.distributed import ShardedDraws, Sharding, launched_rank, launched_world_size, serve_draws
from auditor.audit.drawlog import DrawLog
from auditor.audit.sample import DrawTimer, SamplingPlan, compute_draw, run_draws
from auditor.cli import main

REPO = Path(__file__).resolve().parents[1]

POLICY = """
schema_version: 1
model: {model}
seed: 5
alpha: 0.05
perturbation: {{sigma: 0.05}}
sampling: {{draws: {draws}, batch_size: 4}}
tasks:
  - name: parity
    source: builtin:capitals
    oracle: {{type: python, scorer: "scorers.py:parity"}}
    limit: 4
    max_new_tokens: 3
  - name: scored
    source: builtin:arithmetic
    oracle: {{type: python, scorer: "scorers.py:{scorer}"}}
    limit: 4
    max_new_tokens: 2
    require: {{min_p_lower: {need}}}
"""

SCORERS = """
import time


def parity(answer, example):
    return sum(map(ord, answer)) % 2  # varies with the noise: per-draw outcomes are worth comparing


def always(answer, example):
    return 1


def slow(answer, example):
    time.sleep(0.05)  # slow enough for a rank to be killed mid-run
    return 1
"""


def write_policy(tmp_path: Path, model: Path, draws: int, need: float, scorer: str = "always") -> Path:
    (tmp_path / "scorers.py").write_text(SCORERS)
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(model=model, draws=draws, need=need, scorer=scorer))
    return path


def torchrun(nproc: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] + [
        "-m",
        "auditor",
        "certify",
        *args,
        "--no-progress",
    ]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", AUDITOR_THREADS="1")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return env


def comparable(run: Path) -> tuple[dict[str, Any], list[str]]:
    """The certificate without its run-specific fields, and the draw records of the log."""
    cert = json.loads((run / "certificate.json").read_text())
    for k in ("started", "finished", "run_id", "artifacts"):
        cert.pop(k, None)
    return cert, (run / "draws.jsonl").read_text().splitlines()[1:]


# --- rank 0's consumer against simulated ranks (fast) ---


class FakeRanks(Sharding):
    """Rank 0 of a `world_size` job whose other ranks are simulated in this process.

    A broadcast assignment is remembered; at the gather every other rank computes its share.
    """

    def __init__(self, world_size: int, compute: Any) -> None:
        super().__init__(rank=0, world_size=world_size, local_rank=0, local_world_size=world_size)
        self.compute = compute
        self.assignments: list[Any] = []
        self.computed: list[int] = []

    def _broadcast(self, value: Any) -> Any:
        self.assignments.append(value)
        return value

    def _gather(self, value: Any) -> list[Any]:
        assignment = self.assignments[-1]
        out = [value]
        for r in range(1, self.world_size):
            d = assignment[r] if r < len(assignment) else None
            out.append((d, self.compute(d) if d is not None else None))
        self.computed += [d for d, _ in out if d is not None]
        return out


class ValueTask:
    """A task whose score under draw d is a fixed function of d (the model is not used)."""

    name = "t"
    examples = [0]

    def evaluate(self, model: Any, tokenizer: Any, indices: Any, batch_size: int) -> Any:
        import numpy as np

        return np.array([self.current % 3 != 0], dtype=np.uint8)


class DrawAware:
    """A perturber that tells the task which draw is applied."""

    names = ["w"]

    def __init__(self, task: ValueTask) -> None:
        self.task = task

    def apply(self, draw: int, sign: float = 1.0) -> None:
        self.task.current = draw

    def restore(self) -> None:
        pass


def _sharded_run(tmp_path: Path, world: int, max_draws: int | None, resume_from: Path | None = None) -> Any:
    task = ValueTask()
    pert = DrawAware(task)
    plan = SamplingPlan(
        design="batched", draws=12, seed=0, batch_size=1, max_draws=max_draws, alpha_per_task=0.2, thresholds={"t": 0.2}
    )
    path = resume_from or tmp_path / f"log-{world}-{max_draws}.jsonl"
    log = DrawLog(path, {"h": 1}, resume=resume_from is not None)
    compute = partial(compute_draw, None, None, [task], pert, plan, DrawTimer())
    ranks = FakeRanks(world, compute) if world > 1 else None
    try:
        res = run_draws(None, None, [task], pert, plan, log, source=ShardedDraws(ranks) if ranks else None)
    finally:
        log.close()
    return res, path.read_text().splitlines()[1:], ranks


@pytest.mark.parametrize("world", [2, 3, 5])
def test_sharded_fixed_n_logs_the_same_draws_in_order(tmp_path, world):
    one, lines1, _ = _sharded_run(tmp_path, 1, None)
    many, lines, ranks = _sharded_run(tmp_path, world, None)
    assert lines == lines1 and many.per_task["t"].values == one.per_task["t"].values
    assert ranks.assignments[0] == list(range(world)) and ranks.assignments[-1] is None  # rounds, then stop
    assert sorted(ranks.computed) == list(range(12))  # each draw computed once, by one rank


def test_sharded_sequential_stop_drops_draws_past_it(tmp_path):
    one, lines1, _ = _sharded_run(tmp_path, 1, 12)
    assert one.draws_used < 12, "the test needs an early stop"
    world = next(w for w in (3, 4, 5) if one.draws_used % w)  # a stop inside a round, so some draws are dropped
    many, lines, ranks = _sharded_run(tmp_path, world, 12)
    assert many.draws_used == one.draws_used and lines == lines1 and many.decided == one.decided
    assert max(ranks.computed) >= one.draws_used  # some draws past the stop were computed and dropped


def test_sharded_resume_hands_out_only_unlogged_draws(tmp_path):
    _, full, _ = _sharded_run(tmp_path, 1, None)
    part = tmp_path / "part.jsonl"
    lines = (tmp_path / "log-1-None.jsonl").read_text().splitlines()
    part.write_text("\n".join(lines[:6]) + "\n")  # draws 0-4 survived (rank 0 logs in index order: no gaps)
    res, resumed, ranks = _sharded_run(tmp_path, 2, None, resume_from=part)
    assert res.resumed_draws == 5 and sorted(ranks.computed) == [5, 6, 7, 8, 9, 10, 11]
    by_draw = {json.loads(x)["draw"]: x for x in resumed}
    assert [by_draw[d] for d in range(12)] == full


def test_a_worker_serves_its_share_until_told_to_stop():
    class Worker(Sharding):
        def __init__(self) -> None:
            super().__init__(rank=1, world_size=3, local_rank=1, local_world_size=3)
            self.inbox: list[Any] = [[4, 5, 6], [7, 8], [9], None]
            self.sent: list[Any] = []

        def _broadcast(self, value: Any) -> Any:
            return self.inbox.pop(0)

        def _gather(self, value: Any) -> None:
            self.sent.append(value)

    w = Worker()
    assert serve_draws(w, lambda d: {"d": d}) == 2
    assert w.sent == [(5, {"d": 5}), (8, {"d": 8}), (None, None)]


def test_launch_environment_is_read_without_torch(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert launched_world_size() == 1 and launched_rank() == 0
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    assert launched_world_size() == 4 and launched_rank() == 3


# --- real process groups over gloo ---


def test_two_processes_certify_exactly_like_one(tmp_path, tiny_model_dir, monkeypatch):
    """A sequential run that stops early gives the same log and certificate on 1 and 2 processes."""
    monkeypatch.chdir(tmp_path)  # the certificate shows the policy path relative to the working directory
    policy = write_policy(tmp_path, tiny_model_dir, draws=40, need=0.4)
    one = tmp_path / "one"
    assert main(["certify", str(policy), "--out", str(one), "--sequential", "--no-progress"]) == 0
    two = tmp_path / "two"
    proc = subprocess.run(
        torchrun(2, str(policy), "--out", str(two), "--sequential"),
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cert1, draws1 = comparable(one)
    cert2, draws2 = comparable(two)
    used = cert1["sampling"]["draws_used"]
    assert used < 40 and len(draws1) == used  # stopped early; a stop inside a round drops rank 1's extra draw
    assert draws2 == draws1  # same per-draw outcomes, in the same order
    assert cert2 == cert1  # same bounds, radii, verdicts
    assert len({json.loads(x)["results"]["parity"]["value"] for x in draws1}) > 1, "outcomes should vary"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["one", "two"]  # rank 1 wrote nothing
    assert proc.stdout.count("verdict: PASS") == 1  # one report, from rank 0


def test_accelerate_launch_shards_the_same_way(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    policy = write_policy(tmp_path, tiny_model_dir, draws=5, need=0.0)
    assert main(["certify", str(policy), "--out", str(tmp_path / "one"), "--no-progress"]) == 0
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    cmd += ["-m", "auditor", "certify", str(policy), "--out", str(tmp_path / "two"), "--no-progress"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert comparable(tmp_path / "two") == comparable(tmp_path / "one")


def _pids_with_rank(root_pid: int, rank: str) -> list[int]:
    """Descendants of `root_pid` launched with RANK=`rank` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            todo.append(child)
            try:
                env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in env and b"LOCAL_RANK=" + rank.encode() in env:
                found.append(child)
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker through /proc")
def test_resume_after_a_worker_rank_dies(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    policy = write_policy(tmp_path, tiny_model_dir, draws=20, need=0.0, scorer="slow")
    cut = tmp_path / "cut"
    proc = subprocess.Popen(
        torchrun(2, str(policy), "--out", str(cut)),
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    log = cut / "draws.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 5):
        time.sleep(0.05)
    workers = _pids_with_rank(proc.pid, "1")
    assert len(workers) == 1, "rank 1 not found"
    os.kill(workers[0], signal.SIGKILL)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    done = len(log.read_text().splitlines()) - 1
    assert 4 <= done < 20 and not (cut / "certificate.json").exists()
    resumed = subprocess.run(
        torchrun(2, str(policy), "--out", str(cut), "--resume"),
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"({done} resumed)" in resumed.stdout or f"({done - 1} resumed)" in resumed.stdout
    full = tmp_path / "full"
    assert main(["certify", str(policy), "--out", str(full), "--no-progress"]) == 0
    cert_full, draws_full = comparable(full)
    cert_cut, draws_cut = comparable(cut)
    assert cert_cut == cert_full
    assert sorted(draws_cut, key=lambda x: json.loads(x)["draw"]) == draws_full
