"""SAM against a hand computation on a quadratic, exact restore, and the two ways to call it."""

from __future__ import annotations

import pytest
import torch

from auditor.optim import SAM

A = torch.tensor([1.0, 4.0, 0.5])  # L(w) = 0.5 * sum(A * w^2), gradient A * w
W0 = torch.tensor([1.0, -2.0, 3.0])


def quadratic(w: torch.Tensor) -> torch.Tensor:
    return 0.5 * (A * w * w).sum()


@pytest.mark.parametrize("adaptive", [False, True])
def test_one_step_matches_the_hand_computation(adaptive: bool) -> None:
    rho, lr = 0.1, 0.2
    w = torch.nn.Parameter(W0.clone())
    sam = SAM(torch.optim.SGD([w], lr=lr), rho=rho, adaptive=adaptive)

    def closure() -> torch.Tensor:
        loss = quadratic(w)
        loss.backward()
        return loss

    loss = sam.step(closure)
    g = A * W0
    if adaptive:  # e = rho * T^2 g / ||T g||, T = |w|
        e = rho * W0.abs() ** 2 * g / torch.linalg.vector_norm(W0.abs() * g)
    else:
        e = rho * g / torch.linalg.vector_norm(g)
    expected = W0 - lr * A * (W0 + e)
    assert float(loss.detach()) == pytest.approx(float(quadratic(W0)))
    assert torch.allclose(w.detach(), expected, atol=1e-6)


def test_context_loop_equals_closure_and_restores_exactly() -> None:
    w1, w2 = torch.nn.Parameter(W0.clone()), torch.nn.Parameter(W0.clone())
    s1 = SAM(torch.optim.AdamW([w1], lr=0.05), rho=0.3)
    s2 = SAM(torch.optim.AdamW([w2], lr=0.05), rho=0.3)
    for _ in range(4):
        quadratic(w1).backward()
        before = w1.detach().clone()
        with s1.ascended():
            assert not torch.equal(w1.detach(), before)
            assert w1.grad is None  # the gradient at theta is cleared before the second pass
            quadratic(w1).backward()
        assert torch.equal(w1.detach(), before)
        s1.step()
        s1.zero_grad()

        def closure() -> torch.Tensor:
            loss = quadratic(w2)
            loss.backward()
            return loss

        s2.step(closure)
        s2.zero_grad()
    assert torch.equal(w1, w2)


def test_rho_zero_is_the_base_optimizer() -> None:
    w1, w2 = torch.nn.Parameter(W0.clone()), torch.nn.Parameter(W0.clone())
    base = torch.optim.SGD([w1], lr=0.1, momentum=0.9)
    sam = SAM(torch.optim.SGD([w2], lr=0.1, momentum=0.9), rho=0.0)
    for _ in range(3):
        quadratic(w1).backward()
        base.step()
        base.zero_grad()
        quadratic(w2).backward()
        with sam.ascended():
            quadratic(w2).backward()
        sam.step()
        sam.zero_grad()
    assert torch.equal(w1, w2)


def test_misuse_is_refused() -> None:
    w = torch.nn.Parameter(W0.clone())
    sam = SAM(torch.optim.SGD([w], lr=0.1))
    with pytest.raises(RuntimeError, match="no gradients"), sam.ascended():
        pass
    quadratic(w).backward()
    with pytest.raises(RuntimeError, match="without a backward"):
        sam.step()
    with pytest.raises(ValueError):
        SAM(torch.optim.SGD([w], lr=0.1), rho=-1)
