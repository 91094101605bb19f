"""lm-evaluation-harness tasks, scored by the harness on the in-memory (perturbed) model.

The harness builds the task's requests once (prompts, few-shot contexts, choices); each draw sends
the requests of the drawn documents to an `HFLM` that wraps the live model object, so it sees the
perturbed weights in place. The 0/1 outcome of a document is the task's own per-document metric
(the value lm-eval writes into its logged samples), e.g. `acc` for multiple choice.

What is deliberately not used: lm-eval's response cache (`use_cache`): its key is the request text,
not the weights, so it would replay the clean model's answers on every draw. Batches are of the
policy's fixed size and requests are ordered by the harness deterministically, so a replayed draw
gets the same outcomes. Everything runs offline: local data files via `dataset_path`/`data_files`.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from auditor.errors import TaskError
from auditor.policy.tasks import LmEvalSource
from auditor.tasks.base import Example

LM_EVAL_VERSION = "0.4.13"  # the version these adapters are tested with (pyproject pins it in the 'lm-eval' extra)
_SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")


def _offline() -> None:
    # Never reach the hub: data comes from local files, tokenizers from the loaded model.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    for name in ("lm_eval", "lm-eval", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _import_lm_eval() -> Any:
    _offline()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import lm_eval
            from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise TaskError(
            f"source format 'lm-eval' needs lm-evaluation-harness: pip install 'auditor[lm-eval]' "
            f"(lm-eval=={LM_EVAL_VERSION}) ({exc})"
        ) from exc
    return lm_eval, TaskManager


def _resolve(path: str, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base_dir / p


@functools.lru_cache(maxsize=8)
def _task_manager(include: str | None) -> Any:
    """lm-eval's task index (≈20 s for its own ~thousands of YAMLs): built once per folder and process."""
    _, task_manager_cls = _import_lm_eval()
    return task_manager_cls(include_path=include, include_defaults=include is None)


def load_lm_eval_task(name: str, source: LmEvalSource, base_dir: Path) -> Any:
    """The harness's task object for `source`, its dataset read from local files when given."""
    include = _resolve(source.include_path, base_dir) if source.include_path else None
    if include is not None and not include.is_dir():
        raise TaskError(f"task '{name}': source.include_path {include} is not a folder")
    manager = _task_manager(str(include.resolve()) if include else None)
    entry = manager.task_index.get(source.task)
    if entry is None:
        import difflib

        near = difflib.get_close_matches(source.task, manager.all_subtasks, n=3)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        where = f"in {include}" if include else "in lm-eval's registry"
        raise TaskError(f"task '{name}': source.task '{source.task}' is not a task {where}{hint}")
    overrides: dict[str, Any] = {"task": source.task}
    if source.num_fewshot is not None:
        overrides["num_fewshot"] = source.num_fewshot
    if source.data_files is not None:
        files = {split: _resolve(f, base_dir) for split, f in source.data_files.items()}
        for split, f in files.items():
            if not f.is_file():
                raise TaskError(f"task '{name}': source.data_files.{split}: {f} not found")
        # the pinned harness version's factory merges a registered config with overrides
        base = manager._factory._load_full_config(entry)
        for key in _SPLIT_KEYS:  # a split without a local file is dropped rather than downloaded
            if base.get(key) is not None and base[key] not in files:
                overrides[key] = None
        overrides["dataset_path"] = source.dataset_path or "json"
        overrides["dataset_name"] = None
        overrides["dataset_kwargs"] = {"data_files": {k: str(v) for k, v in files.items()}}
    elif source.dataset_path is not None:
        overrides["dataset_path"] = source.dataset_path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            task = manager._factory.build(entry, overrides=overrides, registry=manager.task_index)
    except Exception as exc:  # the harness raises anything from ValueError to datasets' own errors
        hint = "" if source.data_files else "; offline: point source.data_files at local copies of its splits"
        raise TaskError(
            f"task '{name}': lm-eval could not load '{source.task}' ({type(exc).__name__}: {exc}){hint}"
        ) from exc
    if isinstance(task, (list, dict)) or not hasattr(task, "build_all_requests"):
        raise TaskError(f"task '{name}': '{source.task}' is an lm-eval group or tag; name one of its tasks")
    return task


def _target_text(task: Any, doc: Any, choices: tuple[str, ...] | None) -> str | None:
    try:
        target = task.doc_to_target(doc)
    except Exception:  # a target that needs more than the document: the digest then covers the prompts only
        return None
    if choices and isinstance(target, int) and 0 <= target < len(choices):
        return choices[target]
    return None if target is None else str(target)


class LmEvalTask:
    """One lm-eval task as a 0/1 auditor task: requests built once, scored per draw by the harness."""

    def __init__(
        self,
        name: str,
        harness_task: Any,
        metric: str,
        limit: int | None,
        info: dict[str, Any],
        *,
        system: str | None = None,
    ) -> None:
        self.name = name
        self.metric = metric
        self.info = dict(info)
        self.harness_task = harness_task
        self._system = system
        self._requests: list[list[Any]] | None = None  # per document, in doc order
        self._lm: tuple[Any, Any] | None = None
        self.examples: Sequence[Example] = self._build_examples(limit)

    def _build_examples(self, limit: int | None) -> list[Example]:
        """Build every request now (prompts once); one Example per document for digests and counts."""
        task = self.harness_task
        # the harness draws a tqdm bar while building; stderr is for our own progress
        with contextlib.redirect_stderr(io.StringIO()):
            try:
                task.build_all_requests(
                    limit=limit,
                    cache_requests=False,
                    system_instruction=self._system,
                    apply_chat_template=False,
                )
            except Exception as exc:
                raise TaskError(f"task '{self.name}': lm-eval could not build its requests ({exc})") from exc
        by_doc: dict[int, list[Any]] = defaultdict(list)
        for inst in task.instances:
            by_doc[inst.doc_id].append(inst)
        self._requests = [sorted(by_doc[d], key=lambda r: r.idx) for d in sorted(by_doc)]
        kinds = {r.request_type for group in self._requests for r in group}
        if not kinds <= {"loglikelihood", "generate_until"}:
            raise TaskError(f"task '{self.name}': lm-eval request types {sorted(kinds)} are not supported")
        self.info["request_types"] = sorted(kinds)
        examples = []
        for group in self._requests:
            first = group[0]
            choices = tuple(str(r.args[1]) for r in group) if first.request_type == "loglikelihood" else None
            answer = _target_text(task, first.doc, choices)  # pins the references in the examples digest
            examples.append(
                Example(prompt=str(first.args[0]), answer=answer, choices=choices, meta={"doc_id": first.doc_id})
            )
        return examples

    def describe(self) -> dict[str, Any]:
        """What the certificate records about this task (the harness's config, data digests, metric)."""
        cfg = self.harness_task.config
        return {
            **self.info,
            "n_examples": len(self.examples),
            "metric": self.metric,
            "output_type": cfg.output_type,
            "num_fewshot": cfg.num_fewshot or 0,
            "decoding": "lm-eval " + ", ".join(self.info.get("request_types", [])),
            "system": self._system,
        }

    def _harness_lm(self, model: Any, tokenizer: Any, batch_size: int) -> Any:
        """An HFLM around the live model object (created once per model; perturbations are in place)."""
        if self._lm is None or self._lm[0] is not model or self._lm[1].batch_size != batch_size:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from lm_eval.models.huggingface import HFLM

                logging.getLogger("lm_eval").setLevel(logging.ERROR)
                lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
            self._lm = (model, lm)
        return self._lm[1]

    def evaluate(self, model: Any, tokenizer: Any, indices: Sequence[int], batch_size: int) -> np.ndarray:
        """0/1 per indexed document: the harness answers the requests, the task's metric judges them."""
        assert self._requests is not None
        lm = self._harness_lm(model, tokenizer, batch_size)
        groups = [self._requests[i] for i in indices]
        flat = [r for g in groups for r in g]
        for r in flat:
            r.resps = []
            r.filtered_resps = {}
        for kind in ("loglikelihood", "generate_until"):
            todo = [r for r in flat if r.request_type == kind]
            if todo:
                answers = getattr(lm, kind)(todo, disable_tqdm=True)
                for r, a in zip(todo, answers, strict=True):
                    r.resps.append(a)
        task = self.harness_task
        filters = list(getattr(task, "_filters", []))  # the task's answer extraction (`none`: take the first)
        for f in filters:
            f.apply(flat)
        key = filters[0].name if filters else None
        out = np.empty(len(groups), dtype=np.uint8)
        for k, group in enumerate(groups):
            results = [r.filtered_resps[key] if key else r.resps[0] for r in group]
            metrics = task.process_results(group[0].doc, results)
            out[k] = self._zero_one(metrics, group[0].doc_id)
        return out

    def _zero_one(self, metrics: dict[str, Any], doc_id: int) -> int:
        if self.metric not in metrics:
            raise TaskError(
                f"task '{self.name}': oracle.metric '{self.metric}' is not one of the task's metrics "
                f"({', '.join(sorted(metrics))})"
            )
        value = metrics[self.metric]
        if isinstance(value, bool) or value in (0, 1):
            return int(value)
        raise TaskError(
            f"task '{self.name}': metric '{self.metric}' of document {doc_id} is {value!r}, not 0/1; "
            f"choose a 0/1 metric with oracle.metric"
        )
