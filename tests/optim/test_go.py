"""GO: where the gradient is taken, exact restore, equivalence at sigma = 0, replayable noise."""

from __future__ import annotations

import pytest
import torch

from auditor.optim import GaussianAugmented, WeightBackup


class Quadratic(torch.nn.Module):
    """L(theta) = 0.5 * ||theta||^2 over two tensors: the gradient is theta itself."""

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(5, 4, generator=g).to(dtype))
        self.b = torch.nn.Parameter(torch.randn(4, generator=g).to(dtype))

    def loss(self) -> torch.Tensor:
        return 0.5 * (self.w.float().pow(2).sum() + self.b.float().pow(2).sum())


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def make_go(model: torch.nn.Module, sigma: float = 0.1, lr: float = 0.01, **kw) -> GaussianAugmented:
    return GaussianAugmented(model, torch.optim.SGD(model.parameters(), lr=lr), sigma=sigma, seed=7, **kw)


def test_gradient_is_taken_at_theta_plus_noise() -> None:
    model = Quadratic()
    go = make_go(model, sigma=0.3)
    theta = snapshot(model)
    with go.perturbed():
        model.loss().backward()
    for name, p in model.named_parameters():
        expected = theta[name] + 0.3 * go.noise(0, 0, name)
        assert torch.allclose(p.grad, expected, atol=1e-6, rtol=0)
        assert not torch.allclose(p.grad, theta[name], atol=1e-3)  # not the clean gradient


def test_inside_the_context_the_weights_are_theta_plus_the_seeded_noise() -> None:
    model = Quadratic()
    go = make_go(model, sigma=0.05)
    theta = snapshot(model)
    with go.perturbed():
        assert go.is_perturbed
        for name, p in model.named_parameters():
            assert torch.equal(p.detach(), theta[name] + go.noise(0, 0, name) * 0.05)
    assert not go.is_perturbed


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_theta_is_restored_bit_exactly(dtype: torch.dtype) -> None:
    model = Quadratic(dtype)
    go = make_go(model, sigma=0.01)
    theta = snapshot(model)
    for _ in range(5):
        with go.perturbed():
            model.loss().backward()
            assert not torch.equal(model.w.detach(), theta["w"])
        for name, p in model.named_parameters():
            assert p.dtype == dtype
            assert torch.equal(p.detach(), theta[name])


def test_theta_is_restored_when_the_forward_raises() -> None:
    model = Quadratic()
    go = make_go(model)
    theta = snapshot(model)
    with pytest.raises(ZeroDivisionError), go.perturbed():
        raise ZeroDivisionError
    assert all(torch.equal(p.detach(), theta[n]) for n, p in model.named_parameters())
    assert not go.is_perturbed


def test_sigma_zero_reproduces_the_base_optimizer_step_for_step() -> None:
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    wrapped = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    wrapped.load_state_dict(plain.state_dict())
    base = torch.optim.AdamW(plain.parameters(), lr=0.01, weight_decay=0.1)
    go = GaussianAugmented(wrapped, torch.optim.AdamW(wrapped.parameters(), lr=0.01, weight_decay=0.1), 0.0, seed=1)
    g = torch.Generator().manual_seed(3)
    for _ in range(6):
        x, y = torch.randn(16, 6, generator=g), torch.randn(16, 1, generator=g)
        for micro in (slice(0, 8), slice(8, 16)):  # gradient accumulation, two micro-batches
            torch.nn.functional.mse_loss(plain(x[micro]), y[micro]).backward()
            with go.perturbed():
                torch.nn.functional.mse_loss(wrapped(x[micro]), y[micro]).backward()
        base.step()
        base.zero_grad()
        go.step()
        go.zero_grad()
        for p, q in zip(plain.parameters(), wrapped.parameters(), strict=True):
            assert torch.equal(p, q)


def test_noise_is_replayable_from_the_seed_and_depends_on_nothing_else() -> None:
    a, b = Quadratic(), Quadratic()
    go_a, go_b = make_go(a), make_go(b)
    assert torch.equal(go_a.noise(3, 1, "w"), go_b.noise(3, 1, "w"))
    other = GaussianAugmented(b, torch.optim.SGD(b.parameters(), lr=0.1), sigma=0.1, seed=8)
    assert not torch.equal(go_a.noise(3, 1, "w"), other.noise(3, 1, "w"))
    assert not torch.equal(go_a.noise(3, 1, "w"), go_a.noise(3, 2, "w"))
    assert not torch.equal(go_a.noise(3, 1, "w"), go_a.noise(4, 1, "w"))
    # what was applied at step 2, micro-batch 1 is what noise() regenerates
    theta = snapshot(a)
    for _ in range(2):
        with go_a.perturbed():
            a.loss().backward()
        go_a.step()
        theta = snapshot(a)
    with go_a.perturbed():
        pass
    with go_a.perturbed():
        applied = (a.w.detach() - theta["w"]) / go_a.sigma
    assert torch.allclose(applied, go_a.noise(2, 1, "w"), atol=1e-5)


def test_every_micro_batch_and_step_draws_fresh_noise() -> None:
    model = Quadratic()
    go = make_go(model, sigma=0.1)
    seen = []
    for _ in range(2):
        for _ in range(3):
            with go.perturbed():
                seen.append(model.w.detach().clone())
                model.loss().backward()
        go.step()
        go.zero_grad()
    for i in range(len(seen)):
        for j in range(i):
            assert not torch.allclose(seen[i], seen[j], atol=1e-4)


def test_relative_sigma_scales_each_tensor_by_its_rms() -> None:
    model = Quadratic()
    with torch.no_grad():
        model.b.mul_(100)
    go = make_go(model, sigma=0.02, relative=True)
    theta = snapshot(model)
    with go.perturbed():
        for name, p in model.named_parameters():
            rms = theta[name].pow(2).mean().sqrt()
            assert torch.allclose(p.detach() - theta[name], 0.02 * rms * go.noise(0, 0, name), atol=1e-4)


def test_include_exclude_and_frozen_weights_get_no_noise() -> None:
    model = Quadratic()
    go = make_go(model, exclude=["b"])
    assert go.names == ["w"]
    model.w.requires_grad_(False)
    with pytest.raises(ValueError, match="select no trainable"):
        make_go(model, exclude=["b"])
    assert make_go(model, exclude=["b"], trainable_only=False).names == ["w"]
    model.w.requires_grad_(True)
    theta = snapshot(model)
    with go.perturbed():
        assert torch.equal(model.b.detach(), theta["b"])
        assert not torch.equal(model.w.detach(), theta["w"])


def test_misuse_is_refused() -> None:
    model = Quadratic()
    go = make_go(model)
    with pytest.raises(RuntimeError, match="without a forward/backward"):
        go.step()
    with go.perturbed(), pytest.raises(RuntimeError, match="already active"), go.perturbed():
        pass
    with go.perturbed(), pytest.raises(RuntimeError, match="clean theta"):
        go.step()
    with pytest.raises(ValueError):
        make_go(model, sigma=-1.0)
    with pytest.raises(TypeError):
        GaussianAugmented(model, object(), sigma=0.1, seed=0)  # type: ignore[arg-type]


def test_closure_step_matches_the_context_manager_loop() -> None:
    a, b = Quadratic(), Quadratic()
    go_a, go_b = make_go(a), make_go(b)
    for _ in range(3):
        with go_a.perturbed():
            a.loss().backward()
        go_a.step()
        go_a.zero_grad()

        def closure() -> torch.Tensor:
            loss = b.loss()
            loss.backward()
            return loss

        assert go_b.step(closure) is not None
        go_b.zero_grad()
    assert torch.equal(a.w, b.w) and torch.equal(a.b, b.b)


def test_state_dict_carries_the_step_so_a_resumed_run_replays_the_noise() -> None:
    a, b = Quadratic(), Quadratic()
    go_a = make_go(a)
    for _ in range(3):
        with go_a.perturbed():
            a.loss().backward()
        go_a.step()
    b.load_state_dict(a.state_dict())
    go_b = make_go(b)
    go_b.load_state_dict(go_a.state_dict())
    assert go_b.steps == 3
    with go_a.perturbed():
        wa = a.w.detach().clone()
    with go_b.perturbed():
        wb = b.w.detach().clone()
    assert torch.equal(wa, wb)


def test_host_backup_restores_exactly() -> None:
    model = Quadratic(torch.bfloat16)
    go = make_go(model, backup="host")
    assert go.backup.on_host
    theta = snapshot(model)
    with go.perturbed():
        pass
    assert all(torch.equal(p.detach(), theta[n]) for n, p in model.named_parameters())
    with pytest.raises(ValueError):
        WeightBackup(list(model.parameters()), "disk")


def test_autocast_bf16_and_grad_scaler() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    go = GaussianAugmented(model, torch.optim.AdamW(model.parameters(), lr=0.01), sigma=0.01, seed=0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    x = torch.randn(4, 8)
    before = snapshot(model)
    with go.perturbed():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(x).float().pow(2).mean()
        scaler.scale(loss).backward()
    assert all(torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())
    scaler.step(go)
    scaler.update()
    assert go.steps == 1
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not torch.equal(model[0].weight.detach(), before["0.weight"])


def test_a_scheduler_drives_the_wrapped_optimizer() -> None:
    model = Quadratic()
    go = make_go(model, lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(go, step_size=1, gamma=0.5)
    with go.perturbed():
        model.loss().backward()
    go.step()
    sched.step()
    assert go.base.param_groups[0]["lr"] == 0.5


def test_groups_stay_shared_after_the_wrapped_optimizer_reloads_its_state() -> None:
    model = Quadratic()
    go = make_go(model, lr=1.0)
    go.load_state_dict(go.state_dict())  # torch replaces the wrapped optimizer's group list here (accelerate does this)
    sched = torch.optim.lr_scheduler.StepLR(go, step_size=1, gamma=0.5)
    with go.perturbed():
        model.loss().backward()
    go.step()
    sched.step()
    assert go.base.param_groups[0]["lr"] == 0.5 and go.param_groups is go.base.param_groups
