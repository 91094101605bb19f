"""Token-substitution bounds: the embedding distances, the labels, and the refusals."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import make_model
from factories import make_certificate

from auditor.errors import AuditorError
from auditor.gate.tokens import parse_substitution, token_bound
from auditor.stats import smoothing


def model_dir(tmp_path: Path, tokenizer, tie: bool) -> tuple[torch.nn.Module, Path]:
    model = make_model(tie=tie)
    path = tmp_path / ("tied" if tie else "untied")
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return model, path


def cert_for(model, path: Path, names: list[str], space: str = "weights"):
    params = dict(model.named_parameters())
    cert = make_certificate(
        model_dir=path,
        parameters=names,
        sigma=0.05,
        p_lower=0.8,
        dimension=sum(params[n].numel() for n in names),
    )
    return cert.model_copy(update={"perturbation": cert.perturbation.model_copy(update={"space": space})})


def emb(model) -> torch.Tensor:
    return model.get_input_embeddings().weight.detach().double()


def test_substitution_norm_and_bound(tmp_path, tiny_tokenizer):
    model, path = model_dir(tmp_path, tiny_tokenizer, tie=False)
    cert = cert_for(model, path, ["model.embed_tokens.weight"])
    word = tiny_tokenizer.convert_ids_to_tokens(40)
    res = token_bound(cert, path, ["#5=#6", f"{word}=#7"])
    e = emb(model)
    expected = math.sqrt(float(((e[5] - e[6]) ** 2).sum() + ((e[40] - e[7]) ** 2).sum()))
    assert res.label == "HEURISTIC" and res.refused is None and res.warnings == []
    assert res.delta_norm == pytest.approx(expected, rel=1e-12)
    assert res.substitutions[1]["old_id"] == 40
    assert res.tasks[0]["bound"] == pytest.approx(smoothing.strong_bound(0.8, expected, 0.05))
    assert res.verdict == ("pass" if res.tasks[0]["bound"] >= 0.5 else "not certified")


def test_repeated_replaced_tokens_are_refused(tmp_path, tiny_tokenizer):
    model, path = model_dir(tmp_path, tiny_tokenizer, tie=False)
    res = token_bound(cert_for(model, path, ["model.embed_tokens.weight"]), path, ["#5=#6", "#5=#9"])
    assert res.verdict == "refused" and "distinct" in res.refused and res.delta_norm is None


def test_unperturbed_embedding_is_refused(tmp_path, tiny_tokenizer):
    model, path = model_dir(tmp_path, tiny_tokenizer, tie=False)
    res = token_bound(cert_for(model, path, ["model.layers.0.self_attn.q_proj.weight"]), path, ["#5=#6"])
    assert res.verdict == "refused" and "model.embed_tokens.weight" in res.refused


def test_tied_embeddings_warn(tmp_path, tiny_tokenizer):
    model, path = model_dir(tmp_path, tiny_tokenizer, tie=True)
    res = token_bound(cert_for(model, path, ["model.embed_tokens.weight"]), path, ["#5=#6"])
    assert res.refused is None and len(res.warnings) == 1 and "output layer" in res.warnings[0]
    assert res.to_json()["warnings"] == res.warnings


def test_input_embedding_certificates_are_exact_per_position(tmp_path, tiny_tokenizer):
    model, path = model_dir(tmp_path, tiny_tokenizer, tie=True)
    cert = cert_for(model, path, ["model.embed_tokens.weight"], space="input-embeddings")
    res = token_bound(cert, path, ["#5=#6", "#5=#6"])  # the same token at two positions: allowed here
    e = emb(model)
    assert res.label == "EXACT" and res.warnings == [] and res.refused is None
    assert res.delta_norm == pytest.approx(math.sqrt(2) * float((e[5] - e[6]).norm()), rel=1e-12)


def test_worst_case_over_k(tmp_path, tiny_tokenizer):
    model, path = model_dir(tmp_path, tiny_tokenizer, tie=False)
    cert = cert_for(model, path, ["model.embed_tokens.weight"])
    e = emb(model).numpy()
    res = token_bound(cert, path, [], k=3)
    assert res.delta_norm == pytest.approx(smoothing.worst_case_token_delta_norm(e, None, 3), rel=1e-12)
    some = token_bound(cert, path, ["#5=#6", "#7=#100", "#8=#200"])
    assert some.delta_norm <= res.delta_norm
    cands = tmp_path / "cands.txt"
    cands.write_text("#5\n#7\n#8\n")
    limited = token_bound(cert, path, [], k=2, candidates=cands)
    assert limited.delta_norm == pytest.approx(smoothing.worst_case_token_delta_norm(e, [5, 7, 8], 2), rel=1e-12)
    assert limited.delta_norm <= res.delta_norm


def test_bad_token_inputs(tmp_path, tiny_tokenizer):
    model, path = model_dir(tmp_path, tiny_tokenizer, tie=False)
    cert = cert_for(model, path, ["model.embed_tokens.weight"])
    with pytest.raises(AuditorError, match="not a single token"):
        token_bound(cert, path, ["What is the capital=#5"])
    with pytest.raises(AuditorError, match="outside the vocabulary"):
        token_bound(cert, path, ["#5=#999"])
    with pytest.raises(AuditorError, match="OLD=NEW"):
        parse_substitution("nothing")
    assert parse_substitution("==x") == ("=", "x")


def test_exact_distances_use_the_scaled_embedding_output():
    from auditor.gate.tokens import embedding_scale

    assert embedding_scale({"model_type": "gemma", "hidden_size": 64}) == 8.0
    assert embedding_scale({"model_type": "bart", "scale_embedding": True, "d_model": 16}) == 4.0
    assert embedding_scale({"model_type": "llama", "hidden_size": 64}) == 1.0
