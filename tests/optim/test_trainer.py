"""GO inside a transformers Trainer: sigma = 0 is the plain Trainer; theta is clean at save and eval."""

from __future__ import annotations

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from auditor.optim import GaussianAugmented, GOTrainer
from tests.conftest import make_model


class Rows(torch.utils.data.Dataset):
    def __init__(self, n: int = 8) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(4, 300, (n, 12), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class CleanWhenSeen(TrainerCallback):
    """Records whether GO held perturbed weights whenever the Trainer saved, evaluated or logged."""

    def __init__(self) -> None:
        self.trainer: GOTrainer | None = None
        self.seen: list[bool] = []

    def _check(self) -> None:
        assert self.trainer is not None and self.trainer.go is not None
        self.seen.append(self.trainer.go.is_perturbed)

    def on_save(self, args, state, control, **kw):
        self._check()

    def on_evaluate(self, args, state, control, **kw):
        self._check()

    def on_step_end(self, args, state, control, **kw):
        self._check()


def args(tmp_path, **kw) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        max_steps=2,
        learning_rate=1e-2,
        use_cpu=True,
        report_to=[],
        save_strategy="steps",
        save_steps=1,
        eval_strategy="steps",
        eval_steps=1,
        per_device_eval_batch_size=4,
        logging_steps=1,
        seed=0,
        data_seed=0,
        disable_tqdm=True,
        **kw,
    )


def train(tmp_path, sigma: float | None) -> tuple[torch.nn.Module, object]:
    model = make_model(seed=1)
    model.train()
    ds = Rows()
    common = {"model": model, "args": args(tmp_path), "train_dataset": ds, "eval_dataset": Rows(4)}
    if sigma is None:
        trainer: Trainer = Trainer(**common)
    else:
        cb = CleanWhenSeen()
        trainer = GOTrainer(**common, callbacks=[cb], go_sigma=sigma, go_seed=3)
        cb.trainer = trainer  # type: ignore[assignment]
    trainer.train()
    return model, trainer


def test_sigma_zero_trains_like_the_plain_trainer(tmp_path) -> None:
    plain, _ = train(tmp_path / "plain", None)
    go_model, trainer = train(tmp_path / "go0", 0.0)
    assert isinstance(trainer.go, GaussianAugmented)  # type: ignore[attr-defined]
    assert trainer.go.steps == 2  # type: ignore[attr-defined]
    for (n, p), q in zip(plain.named_parameters(), go_model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6, rtol=0), n


def test_noise_changes_the_training_and_theta_is_clean_at_save_and_eval(tmp_path) -> None:
    plain, _ = train(tmp_path / "plain", None)
    noisy, trainer = train(tmp_path / "go", 0.05)
    cb = next(c for c in trainer.callback_handler.callbacks if isinstance(c, CleanWhenSeen))  # type: ignore[attr-defined]
    assert len(cb.seen) >= 6 and not any(cb.seen)  # 2 step ends, 2 saves, 2 evaluations, all clean
    assert trainer.go.steps == 2 and trainer.go._micro == 0  # type: ignore[attr-defined]
    diff = max((p - q).abs().max().item() for p, q in zip(plain.parameters(), noisy.parameters(), strict=True))
    assert diff > 1e-4
    # the saved checkpoint holds the clean weights the model ends with
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "go" / "checkpoint-2" / "model.safetensors"))
    state = noisy.state_dict()
    assert all(torch.equal(saved[k], state[k]) for k in saved)
