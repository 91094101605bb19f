"""A short, seeded LoRA fine-tune of a model on GSM8K train answers: a real fine-tune direction to slice along.

    python -m bench.lora_finetune --out reports/landscape/lora-gsm8k --steps 20

Prints the loss per step and the seconds spent (CPU, shared machines: timings are indicative only).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch
    from peft import LoraConfig, get_peft_model

    from auditor import load_model

    torch.manual_seed(args.seed)
    lm = load_model(args.model, "float32", "cpu")
    tok = lm.tokenizer
    rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines()[: args.steps * args.batch]]
    texts = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in rows]
    config = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    model = get_peft_model(lm.model, config)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    t0 = time.perf_counter()
    for step in range(args.steps):
        batch = tok(
            texts[step * args.batch : (step + 1) * args.batch],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=128,
        )
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        print(f"step {step + 1:3d}  loss {loss.item():.3f}  {time.perf_counter() - t0:.0f} s", flush=True)
    model.save_pretrained(args.out, safe_serialization=True)
    print(f"adapter: {args.out} ({args.steps} steps, {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
