"""The device path of the perturbation engine and device-mapped loading, exercised on CPU.

The multi-tensor apply, the chunking and the pristine-copy placement run the same code on a GPU;
only the generator's device (and so the noise stream) differs there.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
from conftest import make_model

from auditor.audit import perturb
from auditor.audit.perturb import Perturber, pristine_homes
from auditor.cli import main
from auditor.errors import CheckpointError
from auditor.model.checkpoint import load_model


def _state(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _reference(theta0, pert, draw, scale):
    """theta0 + scale*eps computed the plain way: fp32 sum, one cast."""
    out = {}
    for j, name in enumerate(pert.names):
        t = theta0[name]
        out[name] = (
            (t.float() + scale * pert.noise(draw, j)).to(t.dtype)
            if t.dtype != torch.float32
            else t + (scale * pert.noise(draw, j))
        )
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("cache", [False, True])
def test_chunked_multi_tensor_apply_is_the_plain_formula(monkeypatch, dtype, cache):
    monkeypatch.setattr(perturb, "CHUNK_ELEMENTS", 3000)  # many groups of tensors, one buffer reused across them
    model = make_model(tie=False).to(dtype)
    theta0 = _state(model)
    pert = Perturber(model, sigma=0.02, seed=4, cache_noise=cache)
    assert len(pert._chunks) > 3
    for draw, sign in ((0, 1.0), (0, -1.0), (2, 1.0), (1, -1.0), (1, 1.0)):
        pert.apply(draw, sign)
        params = dict(model.named_parameters())
        for name, expected in _reference(theta0, pert, draw, sign * 0.02).items():
            assert torch.equal(params[name], expected), (draw, sign, name)
        pert.restore()
        for name, p in model.named_parameters():
            assert torch.equal(p, theta0[name]), name


def test_apply_twice_without_restore_still_starts_from_theta0():
    model = make_model(tie=False)
    theta0 = _state(model)
    pert = Perturber(model, sigma=0.1, seed=1)
    pert.apply(0)
    pert.apply(1)
    params = dict(model.named_parameters())
    for name, expected in _reference(theta0, pert, 1, 0.1).items():
        assert torch.equal(params[name], expected), name


def test_pristine_copy_stays_on_the_device_only_when_it_fits():
    gib = 2**30
    homes = pristine_homes(
        {"cuda:0": 10 * gib, "cuda:1": 10 * gib, "cpu": 50 * gib}, {"cuda:0": 40 * gib, "cuda:1": 11 * gib}
    )
    assert homes == {"cuda:0": "device", "cuda:1": "host", "cpu": "device"}
    # the noise scratch counts against the device too
    assert pristine_homes({"cuda:0": 10 * gib}, {"cuda:0": 14 * gib}, scratch=2 * gib) == {"cuda:0": "host"}


def test_placement_is_logged_and_offloaded_weights_are_refused(caplog):
    with caplog.at_level(logging.INFO, logger="auditor"):
        pert = Perturber(make_model(), 0.01, seed=0)
    assert pert.placement == {"cpu": "device"} and "pristine copy" in caplog.text
    with torch.device("meta"):
        ghost = make_model()
    with pytest.raises(ValueError, match="offloaded"):
        Perturber(ghost, 0.01, seed=0)
    with pytest.raises(ValueError, match="pristine"):
        Perturber(make_model(), 0.01, seed=0, pristine="gpu")


def test_device_mapped_load_matches_the_plain_load(tiny_model_dir):
    plain = load_model(str(tiny_model_dir), device="cpu")
    mapped = load_model(str(tiny_model_dir), device_map="auto")
    assert {p.device.type for p in mapped.model.parameters()} == {"cpu"}
    assert mapped.identity == plain.identity
    pa, pb = Perturber(plain.model, 0.01, 3), Perturber(mapped.model, 0.01, 3)
    pa.apply(5)
    pb.apply(5)
    for (n, a), (_, b) in zip(plain.model.named_parameters(), mapped.model.named_parameters(), strict=True):
        assert torch.equal(a, b), n
    with pytest.raises(CheckpointError, match="device map 'everywhere'"):
        load_model(str(tiny_model_dir), device_map="everywhere")


def test_cli_device_map_gives_the_same_certificate(tmp_path, tiny_model_dir, monkeypatch):
    from test_cli import write_policy

    monkeypatch.chdir(tmp_path)
    policy = write_policy(tmp_path, str(tiny_model_dir))
    runs = {}
    for name, extra in (("plain", []), ("mapped", ["--device-map", "auto"])):
        assert main(["certify", str(policy), "--out", str(tmp_path / name), "--no-progress", *extra]) == 0
        runs[name] = json.loads((tmp_path / name / "certificate.json").read_text())
        for k in ("started", "finished", "run_id", "artifacts"):
            runs[name].pop(k, None)
    assert runs["plain"] == runs["mapped"]


def test_an_apply_cut_short_does_not_leave_a_stale_noise_cache(monkeypatch):
    model = make_model(tie=False)
    theta0 = _state(model)
    pert = Perturber(model, sigma=0.05, seed=2, cache_noise=True)
    pert.apply(4)
    pert.restore()
    real_noise, calls = pert.noise, []

    def failing(draw, index, out=None):
        calls.append(index)
        if len(calls) == 3:
            raise RuntimeError("out of memory")
        return real_noise(draw, index, out)

    monkeypatch.setattr(pert, "noise", failing)
    with pytest.raises(RuntimeError):
        pert.apply(5)  # overwrote some cached buffers with draw 5's noise, then failed
    monkeypatch.setattr(pert, "noise", real_noise)
    pert.apply(4, sign=-1.0)
    params = dict(model.named_parameters())
    for name, expected in _reference(theta0, pert, 4, -0.05).items():
        assert torch.equal(params[name], expected), name
