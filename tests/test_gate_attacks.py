"""The gate as a security boundary, attacked: forged certificates and crafted candidate folders.

Every attack runs through the CLI and asserts the exit code, the file or field named, and that no
code from the candidate was imported. Every candidate the gate accepts (pass / not certified) is
then loaded with transformers or peft, and the loaded parameters must differ from the base by
exactly the ||Delta|| the gate reported, and nowhere else (`loader_agrees`).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_model
from factories import make_certificate, sign_certificate
from safetensors.torch import load_file, save_file

from auditor.certificate.schema import write_certificate
from auditor.cli import main
from auditor.stats import smoothing

peft = pytest.importorskip("peft")

Q = "model.layers.0.self_attn.q_proj.weight"
MARKER = "EXECUTED-BY-CANDIDATE"


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_tokenizer):
    """A certified tiny base (untied, with tokenizer and chat template), signed with a trusted key."""
    root = tmp_path_factory.mktemp("attacks")
    model = make_model(tie=False)
    base = root / "base"
    model.save_pretrained(base, safe_serialization=True)
    tiny_tokenizer.save_pretrained(base)
    names = [n for n, _ in model.named_parameters() if "q_proj" in n or "v_proj" in n]
    params = dict(model.named_parameters())
    cert = make_certificate(
        model_dir=base,
        parameters=names,
        sigma=0.05,
        p_lower=0.8,
        dimension=sum(params[n].numel() for n in names),
    )
    run = root / "cert"
    pub = sign_certificate(cert, run, root / "trusted")
    return {"root": root, "base": base, "cert": cert, "run": run, "pub": pub, "names": names}


def gate(world, cert_dir: Path, cand: Path, *extra: str, key: Path | None = None) -> tuple[int, str, dict]:
    """Run `auditor gate` in-process; (exit code, output, report or {}), asserting no candidate code ran."""
    out = cand.parent / f"{cand.name}-report.json"
    out.unlink(missing_ok=True)
    args = ["gate", str(cert_dir), "--candidate", str(cand), "--base", str(world["base"]), "--out", str(out)]
    if key is not False:
        args += ["--trusted-key", str(key or world["pub"])]
    before = set(sys.modules)
    code = main([*args, *extra])
    imported = [m for m in set(sys.modules) - before if str(cand) in str(getattr(sys.modules[m], "__file__", ""))]
    assert not imported, f"candidate code was imported: {imported}"
    assert not (cand.parent / MARKER).exists(), "candidate code ran"
    return code, "", json.loads(out.read_text()) if out.exists() else {}


def run_gate(world, capsys, cand: Path, *extra: str, cert_dir: Path | None = None, key=None) -> tuple[int, str, dict]:
    code, _, report = gate(world, cert_dir or world["run"], cand, *extra, key=key)
    cap = capsys.readouterr()
    return code, cap.out + cap.err, report


def copy_base(world, name: str) -> Path:
    cand = world["root"] / name
    shutil.rmtree(cand, ignore_errors=True)
    shutil.copytree(world["base"], cand)
    return cand


def shifted(world, name: str, scale: float = 1e-4, param: str = Q, seed: int = 1) -> Path:
    """A full fine-tune: the base with `param` moved by scale * N(0, 1)."""
    cand = copy_base(world, name)
    tensors = load_file(cand / "model.safetensors")
    gen = torch.Generator().manual_seed(seed)
    tensors[param] = tensors[param] + scale * torch.randn(tensors[param].shape, generator=gen)
    save_file(tensors, cand / "model.safetensors", metadata={"format": "pt"})
    return cand


def lora(world, name: str, seed: int = 1, **config) -> Path:
    """A real peft adapter on the base (its zero factor randomised so Delta W != 0)."""
    from transformers import AutoModelForCausalLM

    out = world["root"] / name
    shutil.rmtree(out, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(world["base"], dtype=torch.float32)
    config.setdefault("target_modules", ["q_proj", "v_proj"])
    pm = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, **config))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n or "lora_embedding_A" in n:
                p.copy_(0.01 * torch.randn(p.shape, generator=gen))
    pm.save_pretrained(out)
    return out


def loader_agrees(world, cand: Path, report: dict) -> None:
    """Load the candidate as a platform would and compare with the base: the gate's ||Delta||, nowhere else."""
    from transformers import AutoModelForCausalLM

    base_sd = AutoModelForCausalLM.from_pretrained(world["base"], dtype=torch.float32).state_dict()
    if (cand / "adapter_config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(world["base"], dtype=torch.float32)
        loaded = peft.PeftModel.from_pretrained(model, cand).merge_and_unload().state_dict()
    else:
        loaded = AutoModelForCausalLM.from_pretrained(cand, dtype=torch.float32).state_dict()
    assert set(loaded) == set(base_sd)
    changed = {}
    for n, b in base_sd.items():
        d = loaded[n].double() - b.double()
        if bool((d != 0).any()):
            changed[n] = float((d * d).sum())
    assert set(changed) == set(report["delta"]["by_tensor"]), "the loader changed other parameters"
    assert math.sqrt(sum(changed.values())) == pytest.approx(report["delta"]["norm"], rel=1e-6, abs=1e-12)


# ---------------------------------------------------------------- accepted candidates: the proof


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda w: shifted(w, "small"), id="full-small"),
        pytest.param(lambda w: shifted(w, "large", scale=0.05), id="full-large"),
        pytest.param(lambda w: _resharded(shifted(w, "sharded-src")), id="full-sharded"),
        pytest.param(lambda w: _with_docs(shifted(w, "docs")), id="full-with-readme"),
        pytest.param(lambda w: _resaved(shifted(w, "resaved")), id="full-json-resaved-by-another-version"),
        pytest.param(lambda w: lora(w, "lora-plain"), id="lora-plain"),
        pytest.param(lambda w: lora(w, "lora-layers", layers_to_transform=[1]), id="lora-layers"),
        pytest.param(
            lambda w: lora(
                w, "lora-patterns", use_rslora=True, rank_pattern={"v_proj": 2}, alpha_pattern={"q_proj": 3}
            ),
            id="lora-rslora-patterns",
        ),
    ],
)
def test_every_accepted_candidate_loads_to_exactly_the_measured_delta(world, capsys, build):
    cand = build(world)
    code, text, report = run_gate(world, capsys, cand)
    assert report["verdict"] in ("pass", "not certified"), text
    assert code == (0 if report["verdict"] == "pass" else 1)
    assert report["delta"]["norm"] > 0
    loader_agrees(world, cand, report)


def _resharded(src: Path) -> Path:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    out = src.parent / "sharded"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("model.safetensors"))
    model.save_pretrained(out, safe_serialization=True, max_shard_size="20KB")
    assert (out / "model.safetensors.index.json").exists() and not (out / "model.safetensors").exists()
    return out


def _resaved(cand: Path) -> Path:
    """Side files written again by another transformers version: same content, other bytes."""
    gen = json.loads((cand / "generation_config.json").read_text())
    gen["transformers_version"] = "9.9.9"
    (cand / "generation_config.json").write_text(json.dumps(dict(reversed(gen.items())), indent=4))
    return cand


def _with_docs(cand: Path) -> Path:
    (cand / "README.md").write_text("# my fine-tune\n")
    (cand / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    return cand


# ---------------------------------------------------------------- forged or untrusted certificates


def _forged(world, name: str, edit, sign_with: Path | None = None) -> Path:
    data = world["cert"].model_dump(mode="json")
    edit(data)
    from auditor.certificate.schema import Certificate

    cert = Certificate.model_validate(data)
    run = world["root"] / name
    shutil.rmtree(run, ignore_errors=True)
    if sign_with is None:
        run.mkdir()
        write_certificate(cert, run / "certificate.json")
    else:
        sign_certificate(cert, run, sign_with)
    return run


def _inflate(data: dict) -> None:
    """The issue's forgery: sigma to 100 and every p_lower to 0.99."""
    data["perturbation"]["sigma"] = 100.0
    for t in data["tasks"]:
        t.update(p_lower=0.99, p_hat=0.995, p_upper=1.0)


def _inflate_consistently(data: dict) -> None:
    _inflate(data)
    p = data["perturbation"]
    p["typical_noise_norm"] = p["sigma"] * math.sqrt(p["dimension"])
    for t in data["tasks"]:
        t["radius"] = float(smoothing.certified_radius(t["p_lower"], t["target"], p["sigma"]))
        t["radius_weak"] = float(smoothing.weak_radius(t["p_lower"], t["target"], p["sigma"]))
        t["radius_over_sigma"] = t["radius"] / p["sigma"]
        t["curve"] = smoothing.bound_curve(t["p_lower"], p["sigma"], t["curve"]["delta_norm"])


def test_edited_signed_certificate_is_refused(world, capsys):
    run = world["root"] / "edited"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(world["run"], run)
    data = json.loads((run / "certificate.json").read_text())
    _inflate(data)
    (run / "certificate.json").write_text(json.dumps(data))
    code, text, report = run_gate(world, capsys, shifted(world, "c1", scale=0.05), cert_dir=run)
    assert code == 1 and "certificate.json differs from the signed predicate" in text and not report


def test_certificate_signed_by_an_untrusted_key_is_refused(world, capsys):
    run = _forged(world, "attacker-signed", _inflate, sign_with=world["root"] / "attacker-keys")
    code, text, report = run_gate(world, capsys, shifted(world, "c2", scale=0.05), cert_dir=run)
    assert code == 1 and "signature does not verify" in text and not report
    # ... and --allow-unsigned does not rescue a signature that fails: that is tampering, not absence
    code, text, _ = run_gate(world, capsys, shifted(world, "c2", scale=0.05), "--allow-unsigned", cert_dir=run)
    assert code == 1 and "signature does not verify" in text


def test_envelope_of_another_certificate_is_refused(world, capsys):
    other = _forged(world, "other", lambda d: d.update(run_id="other-run"), sign_with=world["root"] / "trusted")
    run = world["root"] / "swapped"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(world["run"], run)
    shutil.copy(other / "certificate.intoto.jsonl", run / "certificate.intoto.jsonl")
    code, text, _ = run_gate(world, capsys, shifted(world, "c3"), cert_dir=run)
    assert code == 1 and "differs from the signed predicate" in text


def test_unsigned_certificate_refused_unless_allowed_and_then_labelled(world, capsys):
    run = _forged(world, "unsigned", lambda d: None)
    cand = shifted(world, "c4")
    code, text, report = run_gate(world, capsys, cand, cert_dir=run)
    assert code == 1 and "unsigned" in text and "--allow-unsigned" in text and not report
    code, text, report = run_gate(world, capsys, cand, cert_dir=run, key=False)  # no trusted key at all
    assert code == 1 and "no trusted public key" in text
    code, text, report = run_gate(world, capsys, cand, "--allow-unsigned", cert_dir=run)
    assert code == 0 and report["verdict"] == "pass (unsigned certificate)"
    assert report["certificate"]["trust"].startswith("unsigned")


@pytest.mark.parametrize(
    "edit, field",
    [
        (_inflate, "perturbation.typical_noise_norm"),  # the first derived number that no longer follows
        (_inflate_consistently, "perturbation.sigma"),  # every derived number redone: the policy text disagrees
        (lambda d: d["tasks"][0].update(p_lower=0.83), "tasks[0].radius"),
        (lambda d: d["tasks"][0].update(radius=1.0), "tasks[0].radius"),
        (lambda d: d["tasks"][0].update(radius_weak=1.0), "tasks[0].radius_weak"),
        (lambda d: d["tasks"][0]["curve"].update(strong=[0.99] * 6), "tasks[0].curve.strong"),
        (lambda d: d["perturbation"].update(typical_noise_norm=1e-3), "perturbation.typical_noise_norm"),
        (lambda d: d["sampling"].update(alpha_per_task=0.5), "sampling.alpha_per_task"),
        (lambda d: d["perturbation"].update(parameters=["model.norm.weight"]), "perturbation.parameters_digest"),
        (lambda d: d["tasks"][0].update(min_p_lower=0.95), "tasks[0].verdict"),
    ],
)
def test_inconsistent_derived_numbers_are_refused_even_unsigned(world, capsys, edit, field):
    run = _forged(world, "inconsistent", edit)
    code, text, report = run_gate(world, capsys, shifted(world, "c5"), "--allow-unsigned", cert_dir=run)
    assert code == 1 and f"field '{field}'" in text and not report


def test_dimension_is_recomputed_from_the_base_shapes(world, capsys):
    def edit(d: dict) -> None:
        p = d["perturbation"]
        p["dimension"] = p["dimension"] * 100  # and sigma*sqrt(d) made consistent with it
        p["typical_noise_norm"] = p["sigma"] * math.sqrt(p["dimension"])

    run = _forged(world, "dim", edit, sign_with=world["root"] / "trusted")
    code, text, report = run_gate(world, capsys, shifted(world, "c6"), cert_dir=run)
    assert code == 1 and "field 'perturbation.dimension'" in text


def test_failed_base_is_refused_unless_allowed(world, capsys):
    def edit(d: dict) -> None:
        d["verdict"] = "fail"
        d["tasks"][0]["verdict"] = "fail"

    run = _forged(world, "failed-base", edit, sign_with=world["root"] / "trusted")
    cand = shifted(world, "c7")
    code, text, report = run_gate(world, capsys, cand, cert_dir=run)
    assert code == 1 and "field 'verdict'" in text and "--allow-failed-base" in text and not report
    code, text, report = run_gate(world, capsys, cand, "--allow-failed-base", cert_dir=run)
    assert code == 0 and report["certificate"]["verdict"] == "fail"


# ---------------------------------------------------------------- full checkpoints: what the loader reads


def _stray_single_next_to_index(world) -> Path:
    """The issue's case: an honest sharded checkpoint plus a stray model.safetensors, which wins."""
    cand = _resharded(copy_base(world, "idx-src"))
    other = load_file(world["base"] / "model.safetensors")
    other[Q] = other[Q] + 1.0
    save_file(other, cand / "model.safetensors", metadata={"format": "pt"})
    return cand


def _stray_shard(world) -> Path:
    cand = shifted(world, "stray-shard")
    shutil.copy(cand / "model.safetensors", cand / "model-00002-of-00002.safetensors")
    return cand


def _other_format(name: str, file: str):
    def build(world) -> Path:
        cand = shifted(world, name)
        (cand / file).write_bytes(b"\x00" * 64)
        return cand

    return build


def _nested_checkpoint(world) -> Path:
    cand = shifted(world, "nested")
    (cand / "checkpoint-500").mkdir()
    shutil.copy(cand / "model.safetensors", cand / "checkpoint-500" / "model.safetensors")
    return cand


def _unlisted_tensor_in_shard(world) -> Path:
    cand = _resharded(copy_base(world, "unlisted-src"))
    shard = sorted(cand.glob("model-*.safetensors"))[0]
    tensors = load_file(shard)
    tensors["lm_head.bias"] = torch.ones(300)
    save_file(tensors, shard, metadata={"format": "pt"})
    return cand


def _side(name: str, edit):
    def build(world) -> Path:
        cand = shifted(world, name)
        edit(cand)
        return cand

    return build


def _json_edit(file: str, **changes):
    def edit(cand: Path) -> None:
        data = json.loads((cand / file).read_text())
        data.update(changes)
        (cand / file).write_text(json.dumps(data))

    return edit


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _evil_code(cand: Path) -> None:
    (cand / "modeling_evil.py").write_text(f"open({str(cand.parent / MARKER)!r}, 'w').write('ran')\n")
    _json_edit("config.json", auto_map={"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"})(cand)


CHECKPOINT_ATTACKS = {
    # name: (builder, exit code, text the refusal must name)
    "stray single file next to index": (_stray_single_next_to_index, 1, "model-00001-of-"),
    "stray shard next to single file": (_stray_shard, 1, "model-00002-of-00002.safetensors"),
    "tf weights": (_other_format("tf", "tf_model.h5"), 1, "tf_model.h5"),
    "flax weights": (_other_format("flax", "flax_model.msgpack"), 1, "flax_model.msgpack"),
    "gguf": (_other_format("gguf", "model.gguf"), 1, "model.gguf"),
    "nested checkpoint": (_nested_checkpoint, 1, "checkpoint-500/model.safetensors"),
    "tensor in a shard the index omits": (_unlisted_tensor_in_shard, 1, "lm_head.bias"),
    "legacy tensor name the loader renames": (
        _side(
            "gamma",
            lambda c: save_file(
                {**load_file(c / "model.safetensors"), "model.norm.gamma": torch.full((32,), 3.0)},
                c / "model.safetensors",
                metadata={"format": "pt"},
            ),
        ),
        1,
        "model.norm.gamma",
    ),
    "pickle next to safetensors": (_other_format("pickle", "pytorch_model.bin"), 2, "pytorch_model.bin"),
    "added chat template": (
        _side("tmpl", lambda c: (c / "chat_template.jinja").write_text("{{ 'always comply' }}")),
        1,
        "chat_template.jinja",
    ),
    "added special tokens map": (
        _side("stm", lambda c: (c / "special_tokens_map.json").write_text('{"eos_token": "<s>"}')),
        1,
        "special_tokens_map.json",
    ),
    "hidden extra chat template": (
        _side("hidden", lambda c: _write(c / "additional_chat_templates" / ".tool_use.jinja", "{{ 'x' }}")),
        1,
        "additional_chat_templates/.tool_use.jinja",
    ),
    "README-named extra chat template": (
        _side("readme", lambda c: _write(c / "additional_chat_templates" / "README.jinja", "{{ 'x' }}")),
        1,
        "additional_chat_templates/README.jinja",
    ),
    "changed generation config": (
        _side("gen", _json_edit("generation_config.json", temperature=2.0, do_sample=True)),
        1,
        "generation_config.json",
    ),
    "changed tokenizer config": (
        _side("tokcfg", _json_edit("tokenizer_config.json", chat_template="{{ 'x' }}")),
        1,
        "tokenizer_config.json",
    ),
    "removed tokenizer": (_side("notok", lambda c: (c / "tokenizer.json").unlink()), 1, "tokenizer.json"),
    "custom code": (_side("code", _evil_code), 1, "modeling_evil.py"),
    "weights redirected by config": (
        _side("redirect", _json_edit("config.json", transformers_weights="other.safetensors")),
        1,
        "transformers_weights",
    ),
    "config dtype makes the loader round every weight": (
        _side("dtype", _json_edit("config.json", dtype="bfloat16")),
        1,
        "dtype",
    ),
    "index escaping the folder": (
        _side(
            "escape",
            lambda c: (
                (c / "model.safetensors").unlink(),
                (c / "model.safetensors.index.json").write_text(
                    json.dumps({"metadata": {}, "weight_map": {Q: "../base/model.safetensors"}})
                ),
            ),
        ),
        2,
        "../base/model.safetensors",
    ),
    "unloadable file name": (
        _side("oddname", lambda c: (c / "model.safetensors").rename(c / "weights.safetensors")),
        2,
        "weights.safetensors",
    ),
}


@pytest.mark.parametrize("attack", sorted(CHECKPOINT_ATTACKS))
def test_checkpoint_folder_attacks(world, capsys, attack):
    build, exit_code, named = CHECKPOINT_ATTACKS[attack]
    code, text, report = run_gate(world, capsys, build(world))
    assert code == exit_code, text
    assert named in text and "Traceback" not in text
    if exit_code == 1:
        assert report["verdict"] == "not certifiable" and any(named in r for r in report["reasons"])
    else:
        assert not report and len(text.strip().splitlines()) == 1


def test_stray_single_file_is_what_the_loader_reads(world, capsys):
    """The gate measures model.safetensors (L2 distance 1 * sqrt(numel) here), as transformers does."""
    cand = _stray_single_next_to_index(world)
    code, text, report = run_gate(world, capsys, cand)
    assert report["delta"]["norm"] == pytest.approx(math.sqrt(32 * 32), rel=1e-6)


# ---------------------------------------------------------------- adapters: what peft creates and loads


def _edit_adapter_config(name: str, **changes):
    def build(world) -> Path:
        cand = lora(world, name)
        _json_edit("adapter_config.json", **changes)(cand)
        return cand

    return build


def _adapter_plus(name: str, edit):
    def build(world) -> Path:
        cand = lora(world, name)
        edit(world, cand)
        return cand

    return build


def _extra_adapter_tensor(world, cand: Path) -> None:
    tensors = load_file(cand / "adapter_model.safetensors")
    tensors["base_model.model.model.norm.weight"] = torch.full((32,), 2.0)  # peft loads it by name (strict=False)
    save_file(tensors, cand / "adapter_model.safetensors", metadata={"format": "pt"})


ADAPTER_ATTACKS = {
    "target_modules widened": (
        _edit_adapter_config("widen", target_modules=["q_proj", "v_proj", "k_proj"]),
        1,
        "k_proj",
    ),
    "layers_to_transform moved": (_edit_adapter_config("layers", layers_to_transform=[1]), 1, "layers.0"),
    "modules_to_save added": (_edit_adapter_config("mts", modules_to_save=["lm_head"]), 1, "lm_head"),
    "random init of missing factors": (
        _edit_adapter_config("noinit", init_lora_weights=False, target_modules=["q_proj", "v_proj", "o_proj"]),
        1,
        "o_proj",
    ),
    "DoRA": (_edit_adapter_config("dora", use_dora=True), 2, "use_dora"),
    "base-rewriting init": (_edit_adapter_config("pissa", init_lora_weights="pissa"), 2, "pissa"),
    "rank disagrees with tensors": (_edit_adapter_config("rank", r=8), 2, "rank"),
    "not a LoRA": (_edit_adapter_config("ia3", peft_type="IA3"), 2, "IA3"),
    "full weights in adapter folder": (
        _adapter_plus("full", lambda w, c: shutil.copy(w["base"] / "model.safetensors", c / "model.safetensors")),
        1,
        "model.safetensors",
    ),
    "pickle next to adapter safetensors": (
        _adapter_plus("bin", lambda w, c: (c / "adapter_model.bin").write_bytes(b"\x80\x04.")),
        2,
        "adapter_model.bin",
    ),
    "factor shape peft rejects": (
        _adapter_plus(
            "shape",
            lambda w, c: save_file(
                {
                    **load_file(c / "adapter_model.safetensors"),
                    "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(4, 16),
                },
                c / "adapter_model.safetensors",
                metadata={"format": "pt"},
            ),
        ),
        2,
        "q_proj.lora_A.weight",
    ),
    "tensor matching no created module": (_adapter_plus("extra", _extra_adapter_tensor), 1, "model.norm.weight"),
    "chat template in adapter folder": (
        _adapter_plus("atmpl", lambda w, c: (c / "chat_template.jinja").write_text("{{ 'x' }}")),
        1,
        "chat_template.jinja",
    ),
    "config.json in adapter folder": (
        _adapter_plus(
            "acfg",
            lambda w, c: (c / "config.json").write_text(
                json.dumps({**json.loads((w["base"] / "config.json").read_text()), "dtype": "bfloat16"})
            ),
        ),
        1,
        "config.json",
    ),
    "no adapter weights": (
        _adapter_plus("empty", lambda w, c: (c / "adapter_model.safetensors").unlink()),
        2,
        "adapter_model.safetensors",
    ),
}


@pytest.mark.parametrize("attack", sorted(ADAPTER_ATTACKS))
def test_adapter_folder_attacks(world, capsys, attack):
    build, exit_code, named = ADAPTER_ATTACKS[attack]
    code, text, report = run_gate(world, capsys, build(world))
    assert code == exit_code, text
    assert named in text and "Traceback" not in text
    if exit_code == 1:
        assert report["verdict"] == "not certifiable" and any(named in r for r in report["reasons"])
    else:
        assert not report


def test_bound_arithmetic_of_an_accepted_adapter_is_the_certificates(world, capsys):
    cand = lora(world, "arith")
    code, text, report = run_gate(world, capsys, cand)
    t = report["tasks"][0]
    assert t["strong"] == pytest.approx(smoothing.strong_bound(0.8, report["delta"]["norm"], 0.05), rel=1e-12)
