"""Per-draw cost of an lm-eval task against the built-in scorer on the same examples.

The first N documents of ARC-Easy (lm-eval's `arc_easy` config, data from ../shared/data/arc) are
scored on the built-in SmolLM2-135M-Instruct under the same noise draws by:
  built-in   auditor's ChoiceTask (shared-prefix KV cache, one pass per batch)
  lm-eval    the harness's HFLM.loglikelihood on the requests it built once (auditor.tasks.lmeval)
Both see the identical prompts ("Question: ...\\nAnswer:") and continuations (" choice"), and the same
batch size. Each draw is timed for evaluation only (the noise is the same work in both); the two
paths alternate inside each draw so machine load hits both alike. Prints the per-draw medians, the
ratio lm-eval / built-in, and how often the two agree on a document's 0/1.

    python bench/lmeval_cost.py [--docs 24] [--draws 4] [--batch-size 16] [--sigma 0.004] [--write]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ARC = ROOT.parent / "shared" / "data" / "arc" / "arc-easy-validation.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=24)
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--sigma", type=float, default=0.004)
    ap.add_argument("--data", type=Path, default=ARC)
    ap.add_argument("--write", action="store_true", help="Write reports/lmeval_cost.md.")
    args = ap.parse_args()

    import torch

    from auditor import load_model
    from auditor.audit.perturb import Perturber
    from auditor.policy.tasks import TaskSpec
    from auditor.tasks import build_task
    from auditor.tasks.base import Example
    from auditor.tasks.choice import ChoiceTask
    from auditor.tasks.prompting import PromptFormat

    torch.set_num_threads(int(__import__("os").environ.get("AUDITOR_THREADS", "1")))
    t0 = time.perf_counter()
    spec = TaskSpec.model_validate(
        {
            "name": "arc_easy",
            "source": {
                "format": "lm-eval",
                "task": "arc_easy",
                "limit": args.docs,
                "data_files": {"validation": str(args.data.resolve())},
            },
        }
    )
    harness = build_task(spec, ROOT)
    setup_lm_eval = time.perf_counter() - t0
    # the same documents for the built-in scorer: lm-eval's own prompts, choices and targets
    examples = []
    for group in harness._requests:  # type: ignore[attr-defined]
        doc = group[0].doc
        choices = tuple(r.args[1].removeprefix(" ") for r in group)
        target = harness.harness_task.doc_to_target(doc)  # type: ignore[attr-defined]
        examples.append(Example(prompt=group[0].args[0], answer=choices[int(target)], choices=choices))
    builtin = ChoiceTask("arc_easy", examples, PromptFormat(template="{prompt}", chat=False))

    lm = load_model("smollm2-135m-instruct")
    model, tok = lm.model, lm.tokenizer
    idx = list(range(len(examples)))
    perturber = Perturber(model, args.sigma, seed=20261129)
    # warm-up (first-call allocations, HFLM construction) outside the timings
    builtin.evaluate(model, tok, idx[:2], args.batch_size)
    harness.evaluate(model, tok, idx[:2], args.batch_size)
    times: dict[str, list[float]] = {"built-in": [], "lm-eval": []}
    agree, total, means = 0, 0, {"built-in": [], "lm-eval": []}
    for draw in range(args.draws):
        with perturber.perturbed(draw):
            order = [("built-in", builtin), ("lm-eval", harness)]
            outs = {}
            for name, task in order if draw % 2 == 0 else order[::-1]:
                t = time.perf_counter()
                outs[name] = task.evaluate(model, tok, idx, args.batch_size)
                times[name].append(time.perf_counter() - t)
                means[name].append(float(outs[name].mean()))
        agree += int((outs["built-in"] == outs["lm-eval"]).sum())
        total += len(idx)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["lm-eval"] / med["built-in"]
    # paired: both paths ran within the same draw, so a draw's ratio is less exposed to the machine's load
    paired = [a / b for a, b in zip(times["lm-eval"], times["built-in"], strict=True)]
    lines = [
        f"lm-eval per-draw cost: ARC-Easy, first {len(idx)} documents (4 choices each), SmolLM2-135M-Instruct fp32, "
        f"batch size {args.batch_size}, sigma {args.sigma}, {args.draws} draws, "
        f"torch threads {torch.get_num_threads()}",
        "",
        "| path | per-draw evaluation, median (min–max) s | mean score per draw |",
        "|---|---|---|",
    ]
    for k in ("built-in", "lm-eval"):
        lines.append(
            f"| {k} | {med[k]:.2f} ({min(times[k]):.2f}–{max(times[k]):.2f}) | "
            f"{', '.join(f'{m:.3f}' for m in means[k])} |"
        )
    lines += [
        "",
        f"ratio lm-eval / built-in: {ratio:.2f}x per draw (medians); paired per-draw ratios: median "
        f"{statistics.median(paired):.2f}x, range {min(paired):.2f}–{max(paired):.2f}x",
        f"per-document 0/1 agreement between the two paths: {agree}/{total}",
        f"one-time lm-eval set-up (task index + requests): {setup_lm_eval:.1f} s",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        (ROOT / "reports" / "lmeval_cost.md").write_text(
            "# lm-eval tasks: per-draw cost against the built-in scorer\n\n"
            "Measured by `python bench/lmeval_cost.py --write` on a shared 2-core CPU machine (other jobs running:\n"
            "absolute times are noisy; the two paths alternate within each draw so load hits both alike).\n\n"
            + text
            + "\n"
        )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
