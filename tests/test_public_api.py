"""`auditor` itself is the public API: every name in `__all__` resolves, lazily, to the object it names."""

from __future__ import annotations

import subprocess
import sys

import pytest

import auditor


def test_every_public_name_resolves_to_its_definition() -> None:
    from auditor.audit.run import ScorerTask, certify_model
    from auditor.verify.certificates import verify

    assert auditor.__all__[0] == "__version__" and len(set(auditor.__all__)) == len(auditor.__all__)
    assert auditor.__all__[1:] == list(auditor._HOME)  # the static list (for linters) names what loads lazily
    for name in auditor.__all__:
        assert getattr(auditor, name) is not None, name
    assert auditor.certify_model is certify_model and auditor.ScorerTask is ScorerTask
    assert auditor.verify_signed is verify  # `auditor.verify` is the verification stage (a subpackage)
    assert sorted(dir(auditor)) == sorted(auditor.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        auditor.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("an unknown public name resolved")


def test_importing_the_package_loads_no_stage() -> None:
    # the CLI's --help and `import auditor` stay light: names load on first use
    code = "import sys, auditor; print(sorted(m for m in sys.modules if m.startswith('auditor')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['auditor', 'auditor.version']"


def test_gate_candidate_and_verify_signed_from_the_package(tmp_path, tiny_tokenizer) -> None:
    """The API's gate runs the CLI's steps: trust the signed base, then ||Delta|| against the radius."""
    from conftest import make_model
    from factories import make_certificate, sign_certificate
    from test_gate_cli import candidate

    from auditor.gate.trust import Untrusted

    model = make_model(tie=False)
    base = tmp_path / "base"
    model.save_pretrained(base, safe_serialization=True)
    tiny_tokenizer.save_pretrained(base)
    names = [n for n, _ in model.named_parameters() if "q_proj" in n]
    params = dict(model.named_parameters())
    cert = make_certificate(
        model_dir=base, parameters=names, sigma=0.05, p_lower=0.8, dimension=sum(params[n].numel() for n in names)
    )
    run = tmp_path / "cert"
    key = sign_certificate(cert, run, tmp_path / "keys")

    near = auditor.gate_candidate(run, candidate(model, tmp_path / "near", 1e-6), trusted_key=key, base=base)
    far = auditor.gate_candidate(run, candidate(model, tmp_path / "far", 1.0), trusted_key=key, base=base)
    assert (near.verdict, near.passed) == ("pass", True)
    assert (far.verdict, far.passed) == ("not certified", False)
    with pytest.raises(Untrusted):  # no trusted key: the base is refused before any candidate is read
        auditor.gate_candidate(run, tmp_path / "near", trusted_key=None, base=base)
    assert auditor.verify_signed(run, key).valid
    (run / "certificate.json").write_text((run / "certificate.json").read_text().replace("0.8", "0.9"))
    assert not auditor.verify_signed(run, key).valid
