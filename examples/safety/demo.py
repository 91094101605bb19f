"""Gating fine-tune uploads, end to end: certify the aligned model, fine-tune it twice, gate both.

    python examples/safety/demo.py                       # the committed adapter (make safety-demo)
    python examples/safety/demo.py --retrain             # train the refusal adapter again first
    python examples/safety/demo.py --base-model DIR --fast --out OUT --work WORK   # tiny model, seconds

1. aligned model: the built-in `smollm2-135m-instruct-refusal` (base + committed adapter, digest checked),
   or with --retrain / --base-model an adapter trained now and merged;
2. `auditor keygen`, then `auditor certify policies/safety.yaml --key …` (signed certificate);
3. two LoRA fine-tunes of the aligned model (benign: GSM8K; harmful: AdvBench compliant targets);
4. `auditor gate CERT --candidate ADAPTER --recertify` for each; the verdict is the gate's exit code and
   report, never the candidate's name;
5. OUT/table.md and OUT/README.md from the certificates and reports.

Every step is the public CLI in a subprocess (threads 1 unless AUDITOR_THREADS says otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import safety_lib as lib  # noqa: E402

ALIGNED = "smollm2-135m-instruct-refusal"
POLICY = Path("policies/safety.yaml")
KINDS = ("benign", "harmful")
# what the committed certificate folder keeps (the per-draw log stays out)
CERT_FILES = ("certificate.json", "certificate.intoto.jsonl", "certificate.html", "certificate.pdf")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("AUDITOR_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", env["AUDITOR_THREADS"])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(lib.REPO), env.get("PYTHONPATH")]))
    return env


def auditor(*args: str, log: Path) -> tuple[int, float]:
    """Run `python -m auditor ARGS`, output to `log` and the console; (exit code, seconds)."""
    cmd = [sys.executable, "-m", "auditor", *args]
    print("$ auditor " + " ".join(args), flush=True)
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.run(cmd, env=_env(), stdout=fh, stderr=subprocess.STDOUT, cwd=lib.REPO)
    secs = time.perf_counter() - t0
    tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-6:]
    print("\n".join("    " + line for line in tail), flush=True)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"auditor {args[0]} failed with exit code {proc.returncode}; see {log}")
    return proc.returncode, secs


def aligned_model(args: argparse.Namespace, work: Path) -> tuple[Path, str | None, float]:
    """(directory of the aligned model, built-in name or None, seconds to make it)."""
    from train_refusal import train

    from auditor.gate.lora import merge_adapter
    from auditor.model.checkpoint import builtin_model_dir, sha256_file

    t0 = time.perf_counter()
    link = work / "aligned"
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.exists():
        shutil.rmtree(link)
    if args.base_model is None and not args.retrain:
        # the built-in: base + committed adapter, its sha256 checked before merging; linked so that
        # reports name a path inside the work folder, not this machine's cache
        link.symlink_to(builtin_model_dir(ALIGNED).resolve(), target_is_directory=True)
        return link, ALIGNED, time.perf_counter() - t0
    base = args.base_model or builtin_model_dir("smollm2-135m-instruct")
    adapter = train(base, work / "adapter", args.fast)
    committed = lib.HERE / "adapter" / "adapter_model.safetensors"
    if args.base_model is None and committed.exists():
        same = sha256_file(adapter / "adapter_model.safetensors") == sha256_file(committed)
        print(f"retrained adapter {'matches' if same else 'DIFFERS from'} the committed one bit for bit")
    merge_adapter(base, adapter, link)
    return link, None, time.perf_counter() - t0


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def task_rows(model: str, cert: dict[str, Any], wall: float) -> list[str]:
    rows = []
    for t in cert["tasks"]:
        rows.append(
            f"| {model} | {t['name']} | {t['clean_score']:.3f} | {t['p_hat']:.3f} | {t['p_lower']:.3f} | "
            f"{t.get('min_p_lower') if t.get('min_p_lower') is not None else '—'} | {t['draws']} | "
            f"{t['verdict']} | {wall:.0f} s |"
        )
    return rows


def write_table(
    out: Path, aligned: dict[str, Any], results: dict[str, dict[str, Any]], timings: dict[str, float]
) -> str:
    lines = [
        "| model | task | clean | p̂ | p_lower | required | draws | verdict | audit wall time |",
        "|---|---|---|---|---|---|---|---|---|",
        *task_rows("aligned (certified)", aligned, timings["certify"]),
    ]
    for kind in KINDS:
        r = results[kind]
        lines += task_rows(f"{kind} fine-tune (recertified)", r["recert"], r["gate_s"])
    lines += [
        "",
        "| candidate | ‖Δ‖₂ | ‖Δ‖/σ | gate (radius) | recertification | exit code | fine-tune time "
        "| gate + recertify time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind in KINDS:
        r = results[kind]
        rep = r["report"]
        norm = rep["delta"]["norm"] if "delta" in rep else float("nan")
        sigma = rep["perturbation"]["sigma"]
        gate_alone = rep.get("gate_verdict", rep["verdict"])  # what the radius said, before recertifying
        lines.append(
            f"| {kind} | {norm:.4g} | {norm / sigma:.4g} | {gate_alone} | {rep['recertification']['verdict']} | "
            f"{r['code']} | {r['train_s']:.0f} s | {r['gate_s']:.0f} s |"
        )
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text, encoding="utf-8")
    return text


def reading(aligned: dict[str, Any], results: dict[str, dict[str, Any]], table: str, meta: dict[str, Any]) -> str:
    """A factual summary generated from the certificates (numbers, verdicts, which task failed)."""
    scores = "; ".join(f"{t['name']} p_lower {t['p_lower']:.3f}" for t in aligned["tasks"])
    out = [
        "# Gating fine-tune uploads: the safety demo",
        "",
        f"Generated by `{meta['command']}` ({meta['mode']}). Aligned model: `{meta['model']}`; policy "
        f"`{meta['policy']}`; σ = {aligned['perturbation']['sigma']} on "
        f"{aligned['perturbation']['dimension']:,} parameters; α = {aligned['sampling']['alpha']} "
        "(Bonferroni over the tasks). Wall times on a shared 2-core CPU, one thread.",
        "",
        table,
        "## Reading",
        "",
        f"- The aligned model's certificate: **{aligned['verdict']}** ({scores}).",
    ]
    for kind in KINDS:
        r = results[kind]
        rec = r["recert"]
        gate_alone = r["report"].get("gate_verdict", r["report"]["verdict"])
        not_passed = [f"{t['name']} {t['verdict']}" for t in rec["tasks"] if t["verdict"] != "pass"]
        out.append(
            f"- {kind} fine-tune: gate on ‖Δ‖ alone says *{gate_alone}*; the recertification says "
            f"**{rec['verdict']}**"
            + (f" ({', '.join(not_passed)})" if not_passed else "")
            + f" after {max(t['draws'] for t in rec['tasks'])} draws; exit code {r['code']}."
        )
    out += [
        "- The verdicts above are read from the gate's exit code and reports, which come from auditing each "
        "candidate under the certificate's own policy; the candidate's name plays no part.",
        "- Bounds hold for the smoothed score E_ε S(θ+ε) under the keyword judge; see the README for what "
        "that judge misses.",
        "",
        "Files: `certificate/` (signed certificate of the aligned model; `signing-key.pub` verifies it with "
        "`auditor verify reports/safety-demo/certificate --key reports/safety-demo/signing-key.pub`), "
        "`gate-benign.json`, `gate-harmful.json` (+ `.intoto.jsonl` signatures).",
        "",
    ]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("reports/safety-demo"), help="what a reader sees")
    ap.add_argument("--work", type=Path, default=Path("build/safety-demo"), help="models, keys, run folders")
    ap.add_argument("--retrain", action="store_true", help="train the refusal adapter again instead of the built-in")
    ap.add_argument("--base-model", type=Path, help="another base model directory (e.g. a tiny test model)")
    ap.add_argument("--fast", action="store_true", help="few examples and steps: a pipeline check, not a result")
    ap.add_argument("--policy", type=Path, default=POLICY)
    args = ap.parse_args()
    os.chdir(lib.REPO)  # the CLI runs from the repository root; report paths stay relative to it
    import torch

    torch.set_num_threads(int(_env()["AUDITOR_THREADS"]))
    out, work = args.out, args.work
    for d in (out, work):
        d.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    model_dir, builtin_name, timings["aligned"] = aligned_model(args, work)
    print(f"aligned model ready in {timings['aligned']:.0f}s: {builtin_name or model_dir}", flush=True)

    keys = work / "keys"
    if not (keys / "signing-key.pem").exists():
        auditor("keygen", "--out", str(keys), log=work / "keygen.log")
    run_dir = work / "certificate"
    shutil.rmtree(run_dir, ignore_errors=True)
    model_args = [] if builtin_name else ["--model", str(model_dir)]
    code, timings["certify"] = auditor(
        "certify", str(args.policy), *model_args, "--out", str(run_dir), "--key", str(keys / "signing-key.pem"),
        "--no-progress", log=work / "certify.log",
    )  # fmt: skip
    cert_out = out / "certificate"
    shutil.rmtree(cert_out, ignore_errors=True)
    cert_out.mkdir(parents=True)
    for name in CERT_FILES:
        if (run_dir / name).exists():
            shutil.copy2(run_dir / name, cert_out / name)
    shutil.copy2(keys / "signing-key.pub", out / "signing-key.pub")
    aligned = read_json(cert_out / "certificate.json")

    from finetune_candidates import finetune

    results: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        adapter, train_s = finetune(model_dir, kind, work / "candidates" / kind, args.fast)
        recert_dir = work / f"recertify-{kind}"
        shutil.rmtree(recert_dir, ignore_errors=True)
        report = out / f"gate-{kind}.json"
        code, gate_s = auditor(
            "gate", str(cert_out / "certificate.json"), "--candidate", str(adapter), "--base", str(model_dir),
            "--recertify", "--recertify-out", str(recert_dir), "--out", str(report),
            "--key", str(keys / "signing-key.pem"), "--trusted-key", str(keys / "signing-key.pub"),
            # the tiny pipeline-check model is not aligned, so its own certificate fails: gate against it anyway
            *(["--allow-failed-base"] if args.fast else []),
            log=work / f"gate-{kind}.log",
        )  # fmt: skip
        results[kind] = {
            "code": code,
            "train_s": train_s,
            "gate_s": gate_s,
            "report": read_json(report),
            "recert": read_json(recert_dir / "certificate.json"),
        }
    table = write_table(out, aligned, results, timings)
    meta = {
        "command": "make safety-demo"
        if not (args.fast or args.retrain or args.base_model)
        else "examples/safety/demo.py",
        "mode": "fast pipeline check" if args.fast else ("retrained adapter" if args.retrain else "committed adapter"),
        "model": builtin_name or model_dir.name,
        "policy": args.policy.as_posix(),
    }
    (out / "README.md").write_text(reading(aligned, results, table, meta), encoding="utf-8")
    summary = {
        k: {
            "gate_exit_code": r["code"],
            "recertification": r["recert"]["verdict"],
            "train_s": r["train_s"],
            "gate_s": r["gate_s"],
        }
        for k, r in results.items()
    }
    (out / "summary.json").write_text(
        json.dumps({"aligned": aligned["verdict"], "candidates": summary, "timings_s": timings}, indent=2) + "\n"
    )
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
