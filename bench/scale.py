"""Draws per second at 1 and 2 processes (torch.distributed, gloo on CPU / one GPU per rank on CUDA).

Each layout runs the real `auditor.certify` under `python -m torch.distributed.run` on the
same policy and seed. The rate is taken between the first and the last draw consumed by rank 0
((draws - first round) / elapsed), so model loading, the clean score and the certificate are
excluded. The certificates of all layouts are compared: they must be identical (run-specific
fields aside). Each process uses --threads torch threads; on a shared machine say how loaded it was.

    python bench/scale.py [--policy policies/default.yaml] [--draws 8] [--procs 1 2] [--threads 1] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def worker(policy: Path, out: Path, threads: int) -> None:
    """One rank of a layout: certify, and on rank 0 record when each draw was consumed."""
    import torch

    from auditor import certify, load_policy

    torch.set_num_threads(threads)
    stamps: list[float] = []
    run = certify(load_policy(policy), out_dir=out, on_draw=lambda draw, means: stamps.append(time.perf_counter()))
    if run is not None:
        (out / "timing.json").write_text(json.dumps({"stamps": stamps, "world": int(os.environ.get("WORLD_SIZE", 1))}))


def layout(policy: Path, out: Path, procs: int, threads: int) -> dict[str, float]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]
    cmd += [str(Path(__file__).resolve()), "--worker", "--policy", str(policy), "--out", str(out)]
    cmd += ["--threads", str(threads)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    timing = json.loads((out / "timing.json").read_text())
    stamps = timing["stamps"]
    first_round = min(procs, len(stamps))
    rate = (len(stamps) - first_round) / (stamps[-1] - stamps[0]) if len(stamps) > first_round else float("nan")
    return {"procs": procs, "draws": len(stamps), "draws_per_s": rate, "wall_s": wall}


def comparable(run: Path) -> dict:
    cert = json.loads((run / "certificate.json").read_text())
    for k in ("started", "finished", "run_id", "artifacts"):
        cert.pop(k, None)
    return cert


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", type=Path, default=ROOT / "policies" / "default.yaml")
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--write", action="store_true", help="also write reports/scale.md")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.policy, args.out, args.threads)
        return

    doc = yaml.safe_load(args.policy.read_text())
    doc["sampling"]["draws"] = args.draws
    results, certs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "policy.yaml"
        if (args.policy.parent / doc.get("model", "")).exists():  # a model directory relative to the policy
            doc["model"] = str((args.policy.parent / doc["model"]).resolve())
        for task in doc["tasks"]:  # data paths are relative to the original policy
            src = task.get("source")
            if isinstance(src, dict) and not Path(src["path"]).is_absolute():
                src["path"] = str((args.policy.parent / src["path"]).resolve())
        policy.write_text(yaml.safe_dump(doc, sort_keys=False))
        for procs in args.procs:
            out = Path(tmp) / f"run-{procs}"
            load = os.getloadavg()[0]
            row = layout(policy, out, procs, args.threads)
            row["load_before"] = load
            results.append(row)
            certs.append(comparable(out))
            print(json.dumps(row))
    same = all(c == certs[0] for c in certs)
    base = results[0]["draws_per_s"]
    lines = [
        f"policy {args.policy.name} with draws={args.draws}, {args.threads} torch thread(s) per process, "
        f"{os.cpu_count()} CPU cores; load average before each layout shown (the machine is shared)",
        "",
        "| processes | draws | draws/s (rank 0, after the first round) | speed-up | wall s (incl. load + report) "
        "| load avg before |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['procs']} | {r['draws']} | {r['draws_per_s']:.3f} | {r['draws_per_s'] / base:.2f}x "
            f"| {r['wall_s']:.1f} | {r['load_before']:.1f} |"
        )
    lines += ["", f"certificates identical across layouts: {'yes' if same else 'NO'}"]
    text = "\n".join(lines)
    print(text)
    if args.write:
        out_md = ROOT / "reports" / "scale.md"
        out_md.write_text(
            "# Draws per second by number of processes\n\n`python bench/scale.py --write`\n\n" + text + "\n"
        )
        print(f"wrote {out_md.relative_to(ROOT)}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
