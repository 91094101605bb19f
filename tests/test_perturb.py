import torch
from conftest import make_model

from auditor.audit.perturb import EmbeddingNoise, Perturber, derive_seed, select_parameters


def _state(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_draw_sees_exactly_theta0_plus_its_noise_and_nothing_leaks():
    model = make_model(tie=False)
    theta0 = _state(model)
    pert = Perturber(model, sigma=0.01, seed=7)
    for draw in (0, 1, 2, 1):  # out of order and repeated: each draw stands alone
        pert.apply(draw)
        params = dict(model.named_parameters())
        for j, name in enumerate(pert.names):
            expected = theta0[name] + 0.01 * pert.noise(draw, j)
            assert torch.equal(params[name], expected), (draw, name)
        pert.restore()
        for name, p in model.named_parameters():
            assert torch.equal(p, theta0[name]), f"noise leaked into {name} after draw {draw}"


def test_a_draw_regenerates_alone_in_a_fresh_process_state():
    a, b = make_model(tie=False), make_model(tie=False)
    pa, pb = Perturber(a, 0.02, seed=3), Perturber(b, 0.02, seed=3)
    for d in range(4):
        pa.apply(d)
        pa.restore()
    pa.apply(4)
    pb.apply(4)  # no earlier draws on this one
    for (n, x), (_, y) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(x, y), n


def test_different_seeds_and_draws_give_different_noise():
    pert = Perturber(make_model(), 0.01, seed=1)
    other = Perturber(make_model(), 0.01, seed=2)
    assert not torch.equal(pert.noise(0, 0), pert.noise(1, 0))
    assert not torch.equal(pert.noise(0, 0), other.noise(0, 0))
    assert derive_seed(1, 0, "a") != derive_seed(1, 0, "b")


def test_restore_is_bit_exact_in_bf16_and_noise_is_cast_once():
    model = make_model(tie=False).to(torch.bfloat16)
    theta0 = _state(model)
    pert = Perturber(model, sigma=0.003, seed=11)
    for draw in range(5):
        pert.apply(draw)
        params = dict(model.named_parameters())
        name = pert.names[0]
        expected = (theta0[name].float() + 0.003 * pert.noise(draw, 0)).to(torch.bfloat16)
        assert torch.equal(params[name], expected)
        pert.restore()
    for name, p in model.named_parameters():
        assert torch.equal(p, theta0[name]), name


def test_tied_weights_are_perturbed_once():
    model = make_model(tie=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    pert = Perturber(model, sigma=0.05, seed=5)
    assert "lm_head.weight" not in pert.names and "model.embed_tokens.weight" in pert.names
    e0 = model.model.embed_tokens.weight.detach().clone()
    pert.apply(0)
    j = pert.names.index("model.embed_tokens.weight")
    assert torch.equal(model.lm_head.weight, e0 + 0.05 * pert.noise(0, j))  # sigma once, not twice
    n_unique = sum(p.numel() for p in model.parameters())
    assert pert.dimension == n_unique


def test_globs_select_and_exclude():
    model = make_model(tie=False)
    names = select_parameters(model, ["*q_proj*", "*v_proj*"], ["model.layers.1.*"])
    assert names == ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.v_proj.weight"]
    theta0 = _state(model)
    pert = Perturber(model, 0.1, 0, ["*q_proj*", "*v_proj*"], ["model.layers.1.*"])
    pert.apply(0)
    for n, p in model.named_parameters():
        assert torch.equal(p, theta0[n]) == (n not in names), n


def test_antithetic_sign_and_noise_cache():
    model = make_model(tie=False)
    theta0 = _state(model)
    pert = Perturber(model, 0.01, seed=9, cache_noise=True)
    name = pert.names[2]
    pert.apply(3, sign=-1.0)
    assert torch.equal(dict(model.named_parameters())[name], theta0[name] - 0.01 * pert.noise(3, 2))
    pert.restore()
    pert.apply(3, sign=1.0)  # served from the cache: must be the same noise
    assert torch.equal(dict(model.named_parameters())[name], theta0[name] + 0.01 * pert.noise(3, 2))


def test_input_embedding_noise_replays_and_detaches():
    model = make_model()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        clean = model(ids).logits
        noise = EmbeddingNoise(model, sigma=0.5, seed=1)
        with noise.perturbed(0):
            a = model(ids).logits
        with noise.perturbed(0):
            b = model(ids).logits
        with noise.perturbed(1):
            c = model(ids).logits
        after = model(ids).logits
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, clean)
    assert torch.equal(after, clean)
