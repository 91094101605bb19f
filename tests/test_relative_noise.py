"""Relative noise: sigma_k = sigma * RMS(theta0_k) per tensor, radii in the whitened norm ||Sigma^-1/2 Delta||."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import make_model
from factories import make_certificate

from auditor.audit.perturb import Perturber, tensor_rms
from auditor.audit.run import ScorerTask, run_audit
from auditor.gate.lora import gate_lora
from auditor.gate.radius import gate_checkpoint
from auditor.gate.trust import Untrusted, check_derived
from auditor.model.checkpoint import memory_identity
from auditor.policy.schema import parse_policy
from auditor.stats import smoothing

peft = pytest.importorskip("peft")

SIGMA = 0.05
R_WHITE = float(smoothing.certified_radius(0.8, 0.5, 1.0))  # whitened radius for p_lower 0.8, target 0.5


def relative_cert(model: torch.nn.Module, path: Path, names: list[str], sigma: float = SIGMA):
    """A relative certificate whose RMS list is computed from the model's own tensors (as the audit does)."""
    params = dict(model.named_parameters())
    rms = {n: tensor_rms(params[n]) for n in names}
    typical = math.sqrt(sum((sigma * rms[n]) ** 2 * params[n].numel() for n in names))
    return make_certificate(
        model_dir=path,
        parameters=names,
        sigma=sigma,
        p_lower=0.8,
        target=0.5,
        dimension=sum(params[n].numel() for n in names),
        tensor_rms=rms,
        typical_noise_norm=typical,
    )


def whitened(deltas: dict[str, torch.Tensor], cert) -> float:
    sig = cert.perturbation.tensor_sigmas()
    return math.sqrt(sum(float((d.double() ** 2).sum()) / sig[n] ** 2 for n, d in deltas.items()))


def names_of(model: torch.nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters() if "q_proj" in n or "v_proj" in n] + ["model.embed_tokens.weight"]


# --------------------------------------------------------------------------- the noise itself


def test_per_tensor_std_is_sigma_times_rms_and_restore_is_bit_exact():
    model = make_model(tie=True)
    with torch.no_grad():  # tensors of very different scales, so a shared std would show
        dict(model.named_parameters())["model.layers.0.self_attn.q_proj.weight"].mul_(30.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    pert = Perturber(model, 0.1, seed=3, scale="relative", cache_noise=True)
    assert pert.tensor_rms is not None
    for j, name in enumerate(pert.names):
        assert pert.stds[j] == 0.1 * tensor_rms(before[name])
    pert.apply(7)
    params = dict(model.named_parameters())
    checked = 0
    for j, name in enumerate(pert.names):
        eps = pert.noise(7, j)
        expected = before[name].float() + pert.stds[j] * eps
        assert torch.equal(params[name].detach(), expected)  # the same counter-based stream, one scalar per tensor
        if before[name].numel() >= 2000:
            ratio = float((params[name] - before[name]).double().std()) / pert.stds[j]
            assert 0.9 < ratio < 1.1, (name, ratio)  # sample std of >= 2000 normals: sd about 0.016
            checked += 1
    assert checked >= 3
    pert.apply(7, -1.0)  # antithetic half from the cache: exactly theta0 - sigma_k * eps
    for j, name in enumerate(pert.names):
        assert torch.equal(params[name].detach(), before[name] - pert.stds[j] * pert.noise(7, j))
    pert.restore()
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n])


def test_relative_refuses_a_zero_tensor():
    model = make_model()
    with torch.no_grad():
        model.model.norm.weight.zero_()
    with pytest.raises(ValueError, match="RMS 0"):
        Perturber(model, 0.1, seed=1, include=["model.norm.weight"], scale="relative")


def test_policy_field_and_refusals():
    text = (
        "schema_version: 1\nseed: 1\nperturbation: {{sigma: 0.1{extra}}}\n"
        "tasks: [{{name: t, source: builtin:capitals, oracle: {{type: contains}}}}]\n"
    )
    assert parse_policy(text.format(extra="")).policy.perturbation.scale == "absolute"
    assert parse_policy(text.format(extra=", scale: relative")).policy.perturbation.scale == "relative"
    with pytest.raises(Exception, match="space: weights"):
        parse_policy(text.format(extra=", scale: relative, space: input-embeddings"))
    with pytest.raises(Exception, match="scale"):
        parse_policy(text.format(extra=", scale: per-tensor"))


# --------------------------------------------------------------------------- the certificate

POLICY = """
schema_version: 1
seed: 4
alpha: 0.05
perturbation: {{sigma: {sigma}, include: ["*norm*"]{extra}}}
sampling: {{design: batched, bound: betting, draws: 24}}
tasks:
  - {{name: t, source: python, oracle: {{type: python, scorer: x}}, require: {{min_p_lower: 0.05}}}}
"""


def _norm_task() -> ScorerTask:
    # RMSNorm weights start at ones (RMS exactly 1): the final norm's sum moves with the noise
    examples = [32.0 - 0.6 + 1.2 * i / 11 for i in range(12)]
    return ScorerTask("t", examples, lambda model, x: int(float(model.model.norm.weight.detach().sum()) > x))


def test_all_rms_equal_reduces_to_the_absolute_certificate(tmp_path):
    certs = {}
    for scale in ("absolute", "relative"):
        extra = "" if scale == "absolute" else ", scale: relative"
        loaded = parse_policy(POLICY.format(sigma=0.05, extra=extra))
        model = make_model()
        log = tmp_path / scale / "draws.jsonl"
        certs[scale], _ = run_audit(model, None, [_norm_task()], loaded, memory_identity(model), log)
    a, r = certs["absolute"], certs["relative"]
    assert r.perturbation.scale == "relative" and a.perturbation.tensor_rms is None
    assert set(r.perturbation.tensor_rms.values()) == {1.0}
    assert r.perturbation.typical_noise_norm == pytest.approx(a.perturbation.typical_noise_norm, rel=1e-12)
    ta, tr = a.tasks[0], r.tasks[0]
    assert 0.0 < ta.p_lower < 1.0
    assert (tr.p_hat, tr.p_lower) == (ta.p_hat, ta.p_lower)  # the very same draws
    assert tr.radius == pytest.approx(ta.radius / 0.05, rel=1e-12)  # whitened radius = absolute radius / sigma
    assert tr.radius_over_sigma == pytest.approx(ta.radius_over_sigma, rel=1e-12)
    assert tr.curve.strong == pytest.approx(ta.curve.strong, rel=1e-12)
    assert "Sigma^-1/2" in r.guarantee and "Sigma^-1/2" not in a.guarantee
    for cert in (a, r):
        check_derived(cert, Path("certificate.json"))


def test_render_states_the_whitened_norm(tmp_path):
    from auditor.certificate.render import render_html

    model = make_model()
    cert = relative_cert(model, None, ["model.norm.weight"])
    html = render_html(cert, signed=False)
    assert "σ·RMS(θ0_k)" in html and "whitened" in html


# --------------------------------------------------------------------------- the gate


@pytest.fixture
def base(tmp_path):
    model = make_model(tie=True)
    path = tmp_path / "base"
    model.save_pretrained(path, safe_serialization=True)
    return model, path


def _shift(model, name: str, white: float, sigma_k: float, seed: int = 1) -> dict[str, torch.Tensor]:
    """Move tensor `name` by a random direction of whitened norm `white` (sigma_k its noise std)."""
    p = dict(model.named_parameters())[name]
    z = torch.randn(p.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    before = p.detach().double().clone()
    with torch.no_grad():
        p.copy_((before + z * (white * sigma_k / float(z.norm()))).to(p.dtype))
    return {name: p.detach().double() - before}


def test_gate_inside_the_whitened_radius_passes_outside_fails(base, tmp_path):
    model, path = base
    names = names_of(model)
    cert = relative_cert(model, path, names)
    sig = cert.perturbation.tensor_sigmas()
    name = "model.layers.1.self_attn.v_proj.weight"
    inside = _shift(model, name, 0.5 * R_WHITE, sig[name])
    model.save_pretrained(tmp_path / "inside", safe_serialization=True)
    ok = gate_checkpoint(cert, tmp_path / "inside", path)
    assert ok.certified_norm == pytest.approx(whitened(inside, cert), rel=1e-9)
    assert ok.certified_norm < R_WHITE and ok.verdict == "pass"
    assert ok.tasks[0].radius == pytest.approx(R_WHITE)
    assert "Sigma^-1/2 Delta" in ok.reasons[-1]
    assert ok.to_json()["delta"]["certified_norm"] == ok.certified_norm
    _shift(model, "model.embed_tokens.weight", 2.0 * R_WHITE, sig["model.embed_tokens.weight"], seed=2)
    model.save_pretrained(tmp_path / "outside", safe_serialization=True)
    far = gate_checkpoint(cert, tmp_path / "outside", path)
    assert far.certified_norm > R_WHITE and far.verdict == "not certified"
    assert far.tasks[0].bound < 0.5


def test_the_geometry_matters(base, tmp_path):
    """The same change is inside one geometry and outside the other: the norm really is whitened."""
    model, path = base
    names = names_of(model)
    cert = relative_cert(model, path, names, sigma=1.0)
    big = "model.layers.0.self_attn.q_proj.weight"
    sigma_k = cert.perturbation.tensor_sigmas()[big]
    _shift(model, big, 0.5 * R_WHITE, sigma_k)
    model.save_pretrained(tmp_path / "cand", safe_serialization=True)
    rel = gate_checkpoint(cert, tmp_path / "cand", path)
    params = dict(make_model(tie=True).named_parameters())
    absolute = make_certificate(
        model_dir=path,
        parameters=names,
        sigma=1.0,
        dimension=sum(params[n].numel() for n in names),
    )
    ab = gate_checkpoint(absolute, tmp_path / "cand", path)
    assert rel.delta.norm == ab.delta.norm
    assert sigma_k < 0.2  # random-init weights are small: relative noise is much finer than sigma = 1
    assert rel.verdict == "pass" and rel.certified_norm == pytest.approx(ab.delta.norm / sigma_k, rel=1e-9)


def test_forged_rms_is_refused(base, tmp_path):
    model, path = base
    names = names_of(model)
    cert = relative_cert(model, path, names)
    _shift(model, names[0], 0.5 * R_WHITE, cert.perturbation.tensor_sigmas()[names[0]])
    model.save_pretrained(tmp_path / "cand", safe_serialization=True)
    rms = dict(cert.perturbation.tensor_rms)
    rms[names[0]] *= 4.0  # inflating sigma_k would shrink the whitened norm of any change there
    forged = cert.model_copy(update={"perturbation": cert.perturbation.model_copy(update={"tensor_rms": rms})})
    check_derived(forged, Path("c.json"))  # self-consistent on paper: only the base's bytes can tell
    with pytest.raises(Untrusted, match=r"tensor_rms\.model\.layers\.0"):
        gate_checkpoint(forged, tmp_path / "cand", path)
    pert = cert.perturbation
    bad_norm = cert.model_copy(update={"perturbation": pert.model_copy(update={"typical_noise_norm": 1.0})})
    with pytest.raises(Untrusted, match="typical_noise_norm"):
        gate_checkpoint(bad_norm, tmp_path / "cand", path)


@pytest.mark.parametrize(
    "update, field",
    [
        ({"tensor_rms": None}, "tensor_rms"),
        ({"tensor_rms": {"w": 1.0}}, "tensor_rms"),
        ({"scale": "absolute"}, "tensor_rms"),
    ],
)
def test_inconsistent_relative_fields_are_refused(base, update, field):
    model, path = base
    cert = relative_cert(model, path, names_of(model))
    if "tensor_rms" in update and update["tensor_rms"] == {"w": 1.0}:
        update = {"tensor_rms": {**cert.perturbation.tensor_rms, names_of(model)[0]: -1.0}}
        field = "tensor_rms.model"
    forged = cert.model_copy(update={"perturbation": cert.perturbation.model_copy(update=update)})
    with pytest.raises(Untrusted, match=field):
        check_derived(forged, Path("c.json"))


def test_relative_radius_claimed_as_absolute_is_refused(base):
    model, path = base
    cert = relative_cert(model, path, names_of(model))
    text = cert.policy.text.replace(", scale: relative", "")
    import hashlib

    policy = cert.policy.model_copy(update={"text": text, "sha256": hashlib.sha256(text.encode()).hexdigest()})
    with pytest.raises(Untrusted, match="perturbation.scale"):
        check_derived(cert.model_copy(update={"policy": policy}), Path("c.json"))


def test_lora_mahalanobis_norm_from_grams_matches_dense(base, tmp_path):
    model, path = base
    names = [n for n, _ in model.named_parameters() if "self_attn" in n]
    cert = relative_cert(model, path, names)
    before = {k: v.detach().double().clone() for k, v in model.state_dict().items()}
    pm = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"]))
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
    pm.save_pretrained(tmp_path / "adapter")
    merged = pm.merge_and_unload().state_dict()
    deltas = {k: merged[k].double() - before[k] for k in names if not torch.equal(merged[k].double(), before[k])}
    assert len(deltas) == 6
    result = gate_lora(cert, tmp_path / "adapter", path)
    dense = whitened(deltas, cert)
    assert result.certified_norm == pytest.approx(dense, rel=1e-6)  # the dense merge is rounded to fp32
    sig = cert.perturbation.tensor_sigmas()
    by_tensor = math.sqrt(sum(v / sig[n] ** 2 for n, v in result.delta.squared.items()))
    assert result.certified_norm == pytest.approx(by_tensor, rel=1e-12)
    assert result.verdict == ("pass" if dense <= R_WHITE else "not certified")
    assert len(result.base_files) > 1  # relative: the base's weights are checked, not only its config


# --------------------------------------------------------------------------- tokens


def test_token_bound_divides_by_the_embedding_sigma(tmp_path, tiny_tokenizer):
    from auditor.gate.tokens import token_bound

    model = make_model(tie=False)
    path = tmp_path / "untied"
    model.save_pretrained(path, safe_serialization=True)
    tiny_tokenizer.save_pretrained(path)
    names = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight"]
    cert = relative_cert(model, path, names)
    sigma_e = cert.perturbation.tensor_sigmas()["model.embed_tokens.weight"]
    res = token_bound(cert, path, ["#5=#6"])
    e = model.get_input_embeddings().weight.detach().double()
    dist = float((e[5] - e[6]).norm())
    assert res.refused is None and res.sigma == sigma_e
    assert res.delta_norm == pytest.approx(dist, rel=1e-12)
    assert res.tasks[0]["bound"] == pytest.approx(smoothing.strong_bound(0.8, dist / sigma_e, 1.0), rel=1e-12)
    rms = {**cert.perturbation.tensor_rms, "model.embed_tokens.weight": 10 * cert.perturbation.tensor_rms[names[0]]}
    forged = cert.model_copy(update={"perturbation": cert.perturbation.model_copy(update={"tensor_rms": rms})})
    with pytest.raises(Untrusted, match="tensor_rms.model.embed_tokens"):
        token_bound(forged, path, ["#5=#6"])


def test_a_sigma_grid_or_auto_with_relative_noise_is_a_policy_error():
    from auditor.errors import PolicyError

    for sigma in ("[0.01, 0.02]", "{auto: [0.01, 0.02]}"):
        with pytest.raises(PolicyError, match="field .perturbation.: scale: relative needs a single sigma"):
            parse_policy(POLICY.format(sigma=sigma, extra=", scale: relative"))
