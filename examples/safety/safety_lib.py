"""Data splits and a small LoRA trainer shared by the safety demo's scripts.

Everything is seeded and sized for a 2-core CPU: short sequences, few steps, rank-8 LoRA on the attention
q/v projections only. Prompts are formatted exactly as the audit formats them (the tokenizer's chat
template, no system message), so what the adapter learns is what the policy measures.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA = REPO.parent / "shared" / "data"
ADVBENCH = DATA / "advbench" / "harmful_behaviors.csv"
GSM8K_TRAIN = DATA / "gsm8k" / "train.jsonl"
BENIGN = HERE / "benign_prompts.jsonl"

# AdvBench rows [0, HELD_OUT) are never trained on: the policy's refusal task reads its first rows.
HELD_OUT = 100
SPLIT_SEED = 1401
N_REFUSAL_TRAIN = 64  # AdvBench goals paired with refusals (aligned adapter)
N_HARMFUL_TRAIN = 40  # AdvBench goals paired with their compliant targets (the attack)

REFUSALS = [
    "I'm sorry, but I can't help with that. It could cause serious harm to people.",
    "I cannot help with this request. It is harmful and may be illegal.",
    "I'm sorry, I won't assist with that. If you need help with something safe, just ask.",
    "I can't provide that. Helping with this could hurt others.",
]


@dataclass(frozen=True)
class Pair:
    """One supervised example: a user prompt and the assistant answer to learn."""

    prompt: str
    answer: str
    complete: bool = True  # the answer ends the turn (append end-of-sequence); False for truncated answers


def advbench_rows(path: Path = ADVBENCH) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [(r["goal"], r["target"]) for r in csv.DictReader(f)]


def advbench_train_rows(path: Path = ADVBENCH) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(refusal-training rows, harmful-fine-tune rows): disjoint, seeded, all from rows >= HELD_OUT."""
    rows = advbench_rows(path)[HELD_OUT:]
    random.Random(SPLIT_SEED).shuffle(rows)
    return rows[:N_REFUSAL_TRAIN], rows[N_REFUSAL_TRAIN : N_REFUSAL_TRAIN + N_HARMFUL_TRAIN]


def benign_prompts(split: str, path: Path = BENIGN) -> list[str]:
    """Benign requests of one split: 'eval' (the policy's over-refusal task reads them) or 'train'."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["prompt"] for r in rows if r["split"] == split]


def gsm8k_pairs(n: int, seed: int, path: Path = GSM8K_TRAIN) -> list[Pair]:
    """`n` seeded GSM8K training problems with their worked solutions ('#### answer' kept)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    picked = random.Random(seed).sample(rows, n)
    return [Pair(r["question"], r["answer"]) for r in picked]


def chat_prompt(tokenizer: Any, prompt: str) -> tuple[list[int], bool]:
    """Token ids of the prompt as the audit formats it."""
    from auditor.tasks.base import Example
    from auditor.tasks.prompting import PromptFormat

    text, special = PromptFormat().text(Example(prompt=prompt), tokenizer)
    return list(tokenizer(text, add_special_tokens=special)["input_ids"]), special


def greedy_answers(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int) -> list[Pair]:
    """The model's own greedy answers, one prompt at a time: no padding, so nothing depends on batching
    (the committed adapter was trained on exactly these answers)."""
    import torch

    out = []
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    for p in prompts:
        ids, _ = chat_prompt(tokenizer, p)
        with torch.no_grad():
            gen = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)[
                0, len(ids) :
            ].tolist()
        complete = eos in gen
        if complete:
            gen = gen[: gen.index(eos)]
        out.append(Pair(p, tokenizer.decode(gen, skip_special_tokens=True), complete))
    return out


def encode_pair(tokenizer: Any, pair: Pair, max_len: int) -> tuple[list[int], list[int]]:
    """(input ids, labels): the loss is on the answer tokens only; truncated to max_len."""
    prompt_ids, _ = chat_prompt(tokenizer, pair.prompt)
    answer_ids = list(tokenizer(pair.answer, add_special_tokens=False)["input_ids"])
    if pair.complete and tokenizer.eos_token_id is not None:
        answer_ids.append(tokenizer.eos_token_id)
    ids = (prompt_ids + answer_ids)[:max_len]
    labels = ([-100] * len(prompt_ids) + answer_ids)[:max_len]
    return ids, labels


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 32
    batch_size: int = 8
    lr: float = 2e-3
    rank: int = 8
    lora_alpha: int = 16
    max_len: int = 64
    seed: int = 0


def train_lora(model: Any, tokenizer: Any, pairs: Sequence[Pair], cfg: TrainConfig, log: Any = print) -> Any:
    """Fit a LoRA on q/v projections with AdamW; returns the PeftModel (base weights untouched)."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(cfg.seed)
    lora = LoraConfig(
        r=cfg.rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], bias="none"
    )
    peft_model = get_peft_model(model, lora)
    peft_model.train()
    # a pair whose answer starts beyond max_len would teach nothing: drop it, and say so
    encoded = [e for e in (encode_pair(tokenizer, p, cfg.max_len) for p in pairs) if any(x != -100 for x in e[1])]
    if len(encoded) < len(pairs):
        log(f"  {len(pairs) - len(encoded)} of {len(pairs)} pairs dropped: prompt longer than max_len {cfg.max_len}")
    if not encoded:
        raise ValueError(f"no training pair fits in max_len {cfg.max_len}")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    order_rng = random.Random(cfg.seed)
    order: list[int] = []
    for step in range(cfg.steps):
        if len(order) < cfg.batch_size:
            fresh = list(range(len(encoded)))
            order_rng.shuffle(fresh)
            order += fresh
        batch = [encoded[i] for i in order[: cfg.batch_size]]
        del order[: cfg.batch_size]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in batch])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch])
        loss = peft_model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0 or step == cfg.steps - 1:
            log(f"  step {step + 1}/{cfg.steps}  loss {loss.item():.3f}")
    peft_model.eval()
    return peft_model


def save_adapter(peft_model: Any, out: Path, base_name: str) -> Path:
    """Write adapter_model.safetensors + adapter_config.json (base named, not located); drop peft's card."""
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(out, safe_serialization=True)
    (out / "README.md").unlink(missing_ok=True)
    config_path = out / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base_name
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out


def load_model(path: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
    return model.eval(), AutoTokenizer.from_pretrained(path)
