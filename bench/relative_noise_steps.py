"""How long does a LoRA fine-tune stay inside the certified set, under absolute and under relative noise geometry?

    python -m bench.relative_noise_steps --out reports/relative_noise.md

Seeded LoRA fine-tunes (q_proj, v_proj, as bench/lora_finetune.py) of the default model on GSM8K train answers. After
every step the change Delta = s*B*A of every adapted tensor is measured in both norms and compared with the radii a
certificate with the example's p_lower (reports/example/certificate.json) would state:
  - absolute: ||Delta||_2 against R = sigma (Phi^-1(p_lower) - Phi^-1(q)), sigma = the example's 0.004;
  - relative: ||Sigma^-1/2 Delta||_2 = sqrt(sum_k ||Delta_k||^2 / (sigma_rel RMS_k)^2) against R_w = Phi^-1(p_lower) -
    Phi^-1(q), with sigma_rel chosen so that one draw has the same L2 norm as an absolute draw (equal noise energy).
The relative certificate's p_lower is ASSUMED equal to the absolute one (it was not audited): the table compares the
geometries at a comparable p_lower, it certifies nothing. CPU timings on a shared machine are indicative only.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "train.jsonl"
EXAMPLE = Path(__file__).resolve().parents[1] / "reports" / "example" / "certificate.json"


def lora_deltas(model, scale: float) -> dict[str, float]:
    """||s B A||_F^2 per adapted base weight (float64), keyed by the base parameter name."""
    import torch

    out = {}
    mods = dict(model.named_modules())
    for name, mod in mods.items():
        if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
            a = mod.lora_A["default"].weight.detach().double()
            b = mod.lora_B["default"].weight.detach().double()
            g = (b.T @ b) * (a @ a.T)  # Gram trick: ||B A||_F^2 = sum((B^T B) * (A A^T))
            base = name.replace("base_model.model.", "") + ".weight"
            out[base] = float(scale * scale * torch.clamp(g.sum(), min=0.0))
    return out


def span(rms: dict[str, float], part: str) -> str:
    vals = [v for k, v in rms.items() if part in k]
    return f"{min(vals):.3g}–{max(vals):.3g}"


def run(seed: int, lr: float, steps: int, rows: list[dict], rms: dict[str, float], model_name: str) -> list[dict]:
    import torch
    from peft import LoraConfig, get_peft_model

    from auditor import load_model

    torch.manual_seed(seed)
    lm = load_model(model_name, "float32", "cpu")
    tok = lm.tokenizer
    rank = 8
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    model = get_peft_model(lm.model, config)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    texts = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in rows]
    gen = torch.Generator().manual_seed(seed)
    trace = []
    for step in range(steps):
        idx = torch.randint(len(texts), (4,), generator=gen).tolist()
        batch = tok([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True, max_length=128)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        sq = lora_deltas(model, 2.0)  # lora_alpha / r
        trace.append(
            {
                "step": step + 1,
                "loss": float(loss.item()),
                "abs": math.sqrt(math.fsum(sq.values())),
                # whitened norm at sigma_rel = 1; divide by sigma_rel for the certificate's norm
                "white_unit": math.sqrt(math.fsum(v / rms[n] ** 2 for n, v in sq.items())),
            }
        )
    return trace


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--lrs", default="1e-3,1e-5,1e-7")
    args = ap.parse_args(argv)

    import torch
    from scipy.stats import norm

    from auditor import load_model
    from auditor.audit.perturb import select_parameters, tensor_rms

    t0 = time.perf_counter()
    torch.set_num_threads(1)
    cert = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    sigma = float(cert["perturbation"]["sigma"])
    lm = load_model(args.model, "float32", "cpu")
    params = dict(lm.model.named_parameters())
    names = select_parameters(lm.model, cert["perturbation"]["include"], cert["perturbation"]["exclude"])
    rms = {n: tensor_rms(params[n]) for n in names}
    d = sum(params[n].numel() for n in names)
    # equal noise energy: sigma_rel^2 sum_k RMS_k^2 n_k = sigma^2 d
    sigma_rel = sigma * math.sqrt(d / math.fsum(rms[n] ** 2 * params[n].numel() for n in names))
    del lm, params
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()[:400]]
    lrs = [float(x) for x in args.lrs.split(",")]
    traces = {(lr, s): run(s, lr, args.steps, rows, rms, args.model) for lr in lrs for s in range(args.seeds)}

    lines = [
        "# Fine-tune steps inside the certified set: absolute vs relative noise geometry",
        "",
        f"`python -m bench.relative_noise_steps --out {args.out} --steps {args.steps} --seeds {args.seeds} "
        f"--lrs {args.lrs}` — LoRA r=8, alpha=16 on q_proj/v_proj of {args.model}, batch 4 of GSM8K train answers, "
        f"AdamW; the change after every step is measured. Absolute: sigma = {sigma:g} on all {d:,} weights "
        f"(reports/example). Relative: sigma_rel = {sigma_rel:.4g} (sigma_k = sigma_rel * RMS(theta0_k)), chosen "
        "so one draw has the same L2 norm. **The relative p_lower is assumed equal to the absolute one (not "
        "audited)**: this compares geometries at a comparable p_lower; it certifies nothing.",
        "",
        f"RMS of the adapted tensors: q_proj {span(rms, 'q_proj')}, v_proj {span(rms, 'v_proj')}; "
        f"all tensors {min(rms.values()):.3g}–{max(rms.values()):.3g}.",
        "",
        "Steps inside (out of the run's steps; mean and min–max over seeds) and the change at step 1 and at the end "
        "in units of each radius (||Delta||/R, ||Sigma^-1/2 Delta||/R_w; < 1 is inside):",
        "",
        "| task (p_lower) | lr | R abs | R_w | steps inside, abs | steps inside, rel | step 1: abs / rel | "
        "last step: abs / rel |",
        "|---|---|---|---|---|---|---|---|",
    ]
    result = {"sigma": sigma, "sigma_rel": sigma_rel, "dimension": d, "traces": {}, "tasks": []}
    for t in cert["tasks"]:
        p, q = float(t["p_lower"]), float(t["target"])
        rw = float(norm.ppf(p) - norm.ppf(q))
        ra = sigma * rw
        for lr in lrs:
            ins_a, ins_r, first, last = [], [], [], []
            for s in range(args.seeds):
                tr = traces[(lr, s)]
                ins_a.append(sum(x["abs"] <= ra for x in tr))
                ins_r.append(sum(x["white_unit"] / sigma_rel <= rw for x in tr))
                first.append((tr[0]["abs"] / ra, tr[0]["white_unit"] / sigma_rel / rw))
                last.append((tr[-1]["abs"] / ra, tr[-1]["white_unit"] / sigma_rel / rw))

            def mm(v: list[int]) -> str:
                return f"{sum(v) / len(v):.1f} ({min(v)}–{max(v)})"

            def ratio(v: list[tuple[float, float]]) -> str:
                return f"{sum(a for a, _ in v) / len(v):.3g} / {sum(b for _, b in v) / len(v):.3g}"

            lines.append(
                f"| {t['name']} ({p:.3f}) | {lr:g} | {ra:.3g} | {rw:.3g} | {mm(ins_a)} | {mm(ins_r)} | "
                f"{ratio(first)} | {ratio(last)} |"
            )
            row = {"task": t["name"], "p_lower": p, "lr": lr, "inside_abs": ins_a, "inside_rel": ins_r}
            result["tasks"].append(row)
    for (lr, s), tr in traces.items():
        result["traces"][f"lr={lr:g},seed={s}"] = tr
    minutes = (time.perf_counter() - t0) / 60
    lines += [
        "",
        f"{len(traces)} runs x {args.steps} steps, {minutes:.1f} CPU minutes on a shared 2-core machine (indicative).",
        "",
    ]
    args.out.write_text("\n".join(lines), encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
