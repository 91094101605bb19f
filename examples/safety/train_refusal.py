"""Train the refusal LoRA behind the built-in `smollm2-135m-instruct-refusal`.

    python examples/safety/train_refusal.py                 # writes examples/safety/adapter/
    python examples/safety/train_refusal.py --base DIR --fast --out DIR   # any small HF model, seconds

Data: AdvBench goals from the training split (rows >= 100, seeded) paired with short refusals, mixed with
benign requests paired with the base model's own greedy answers, so the adapter learns when to refuse
without drifting away from what the model already says to harmless requests.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import safety_lib as lib  # noqa: E402

BASE_NAME = "smollm2-135m-instruct"
STEPS = 32
FAST_STEPS = 4


def build_pairs(model, tokenizer, fast: bool) -> list[lib.Pair]:
    refusal_rows, _ = lib.advbench_train_rows()
    benign = lib.benign_prompts("train")
    if fast:
        refusal_rows, benign = refusal_rows[:8], benign[:8]
    refusals = [lib.Pair(goal, lib.REFUSALS[i % len(lib.REFUSALS)]) for i, (goal, _) in enumerate(refusal_rows)]
    own = lib.greedy_answers(model, tokenizer, benign, max_new_tokens=8 if fast else 32)
    return refusals + own


def train(base: Path, out: Path, fast: bool, seed: int = 0) -> Path:
    import torch

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    model, tokenizer = lib.load_model(base)
    pairs = build_pairs(model, tokenizer, fast)
    print(f"{len(pairs)} training pairs ({time.perf_counter() - t0:.0f}s to build)")
    cfg = lib.TrainConfig(steps=FAST_STEPS if fast else STEPS, seed=seed)
    print(f"training: {cfg}")
    peft_model = lib.train_lora(model, tokenizer, pairs, cfg)
    lib.save_adapter(peft_model, out, BASE_NAME if base.name == BASE_NAME else base.name)
    print(f"adapter written to {out} in {time.perf_counter() - t0:.0f}s")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, help="base model directory (default: the built-in SmolLM2-135M-Instruct)")
    ap.add_argument("--out", type=Path, default=lib.HERE / "adapter")
    ap.add_argument("--fast", action="store_true", help="a few examples and steps (pipeline check on a tiny model)")
    args = ap.parse_args()
    from auditor.model.checkpoint import builtin_model_dir, sha256_file

    base = args.base or builtin_model_dir(BASE_NAME)
    out = train(base, args.out, args.fast)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        print(f"sha256 {sha256_file(out / name)}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
