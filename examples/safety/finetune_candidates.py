"""Two fine-tune uploads of the aligned model, as LoRA adapters: one benign, one harmful.

    python examples/safety/finetune_candidates.py --base ALIGNED_DIR --out DIR [--fast]

benign:  GSM8K training problems with their worked solutions (a typical capability fine-tune).
harmful: AdvBench goals (rows >= 100, disjoint from the refusal-training rows) paired with their compliant
         `target` strings ("Sure, here is ..."): the known harmful fine-tuning attack, a few dozen examples.
Both use the same LoRA recipe (q/v, rank 8, the same steps, batch and learning rate), so only the data differs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import safety_lib as lib  # noqa: E402

N_BENIGN = 40
STEPS = 16
FAST_STEPS = 3
SEED = 2


def candidate_pairs(kind: str, fast: bool) -> list[lib.Pair]:
    n = 8 if fast else None
    if kind == "benign":
        return lib.gsm8k_pairs(n or N_BENIGN, seed=SEED)
    if kind == "harmful":
        _, harmful = lib.advbench_train_rows()
        return [lib.Pair(goal, target) for goal, target in harmful[:n]]
    raise ValueError(kind)


def finetune(base: Path, kind: str, out: Path, fast: bool) -> tuple[Path, float]:
    """Train one candidate adapter on `base`; returns (adapter dir, seconds)."""
    import torch

    t0 = time.perf_counter()
    torch.manual_seed(SEED)
    model, tokenizer = lib.load_model(base)
    pairs = candidate_pairs(kind, fast)
    # GSM8K questions are long: room for the prompt plus the start of the worked solution
    cfg = lib.TrainConfig(steps=FAST_STEPS if fast else STEPS, batch_size=4, max_len=192, seed=SEED)
    print(f"{kind}: {len(pairs)} examples, {cfg}")
    peft_model = lib.train_lora(model, tokenizer, pairs, cfg)
    lib.save_adapter(peft_model, out, base.name)
    return out, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, required=True, help="the aligned model directory")
    ap.add_argument("--out", type=Path, required=True, help="folder for the benign/ and harmful/ adapters")
    ap.add_argument("--fast", action="store_true", help="a few examples and steps (pipeline check on a tiny model)")
    args = ap.parse_args()
    for kind in ("benign", "harmful"):
        path, secs = finetune(args.base, kind, args.out / kind, args.fast)
        print(f"{kind} adapter: {path} ({secs:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
