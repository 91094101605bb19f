"""Perturbation overhead: per draw, noise + apply + restore time / one clean evaluation of the policy's batch.

In one run, on the policy's model and device: the baseline is one unperturbed evaluation of exactly
what a draw scores (every task on draw 0's examples, the policy's batch size); then, for --draws
draws, the time of `Perturber.apply` (noise generation and the in-place update) and of `restore`.
Targets: ratio <= 0.5 on a CPU, <= 0.10 on a GPU. On CUDA every timing is synchronised.

    python bench/perturb_overhead.py [--policy P] [--draws 5] [--threads 1] [--dtype bfloat16] [--write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET = {"cpu": 0.5, "cuda": 0.10}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", type=Path, default=ROOT / "policies" / "default.yaml")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device-map", default=None, help="load with accelerate's device map (e.g. auto)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="override the policy's dtype")
    ap.add_argument("--write", action="store_true", help="also write reports/perturb_overhead.md")
    args = ap.parse_args()

    import torch

    from auditor import load_model, load_policy
    from auditor.audit.sample import draw_indices, make_perturber, plan_from_policy
    from auditor.tasks import build_tasks

    torch.set_num_threads(args.threads)
    loaded = load_policy(args.policy)
    policy = loaded.policy
    if args.dtype:
        policy = policy.model_copy(update={"dtype": args.dtype})
    tasks = build_tasks(loaded)
    lm = load_model(policy.model, policy.dtype, policy.device, loaded.base_dir, device_map=args.device_map)
    device = str(next(lm.model.parameters()).device)
    plan = plan_from_policy(policy, [t.name for t in tasks])
    perturber = make_perturber(lm.model, policy)

    def evaluate() -> float:
        _sync(device)
        t0 = time.perf_counter()
        for task in tasks:
            task.evaluate(lm.model, lm.tokenizer, draw_indices(task, plan, 0), plan.batch_size)
        _sync(device)
        return time.perf_counter() - t0

    evaluate()  # warm-up (allocator, kernels)
    clean = evaluate()
    applies, restores = [], []
    for draw in range(args.draws + 1):
        _sync(device)
        t0 = time.perf_counter()
        perturber.apply(draw)
        _sync(device)
        t1 = time.perf_counter()
        perturber.restore()
        _sync(device)
        if draw > 0:  # draw 0 pays for allocating the noise buffers
            applies.append(t1 - t0)
            restores.append(time.perf_counter() - t1)
    apply_s, restore_s = statistics.median(applies), statistics.median(restores)
    ratio = (apply_s + restore_s) / clean
    kind = "cuda" if device.startswith("cuda") else "cpu"
    n = sum(p.numel() for p in perturber.params) if hasattr(perturber, "params") else 0
    rows = [
        "| quantity | seconds |",
        "|---|---|",
        f"| clean evaluation of the policy's batch ({len(tasks)} tasks) | {clean:.3f} |",
        f"| noise + apply (median of {args.draws}) | {apply_s:.3f} |",
        f"| restore (median of {args.draws}) | {restore_s:.3f} |",
        f"| **overhead ratio** (noise + apply + restore) / clean | **{ratio:.3f}** (target <= {TARGET[kind]}) |",
    ]
    head = (
        f"model {policy.model} ({n:,} perturbed parameters, {policy.dtype}) on {device}, "
        f"{args.threads} torch thread(s), pristine copy: {getattr(perturber, 'placement', {})}"
    )
    text = "\n".join([head, "", *rows])
    print(text)
    if args.write:
        out = ROOT / "reports" / "perturb_overhead.md"
        out.write_text(
            "# Perturbation overhead per draw\n\n`python bench/perturb_overhead.py --write`\n\n" + text + "\n"
        )
        print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
