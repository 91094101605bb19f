"""Tasks: examples + prompt format + decoding + a 0/1 oracle, built from a policy's `tasks` list.

Takes a loaded policy (its task specs and the files they name). Gives one `Task` per spec (`build_tasks`):
generation tasks (`generate`, judged by `oracles`) and log-likelihood choice tasks (`choice`), from built-in
sets (`builtin`), JSONL/CSV and benchmark loaders (`loaders`) or lm-evaluation-harness (`lmeval`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any

from auditor.errors import TaskError
from auditor.policy.schema import LoadedPolicy
from auditor.policy.tasks import DataSource, LmEvalSource, RefusalOracle, TaskSpec
from auditor.tasks.base import Example, Task
from auditor.tasks.builtin import BUILTINS, builtin
from auditor.tasks.choice import ChoiceTask
from auditor.tasks.generate import GenerationTask
from auditor.tasks.loaders import load_source, resolve_path
from auditor.tasks.oracles import make_scorer, reference_number
from auditor.tasks.prompting import PromptFormat

__all__ = ["BUILTINS", "ChoiceTask", "Example", "GenerationTask", "Task", "build_task", "build_tasks"]


def build_tasks(loaded_policy: LoadedPolicy) -> list[Task]:
    """Every task of the policy, data paths resolved against the policy file's folder.

    Problems are gathered over all tasks and raised together: one TaskError, one line each.
    """
    origin = str(loaded_policy.path) if loaded_policy.path else "<policy>"
    tasks: list[Task] = []
    problems: list[str] = []
    for i, spec in enumerate(loaded_policy.policy.tasks):
        unknown = _unknown_builtin(spec)
        if unknown is not None:
            problems.append(f"{origin}: field 'tasks[{i}].source': {unknown}")
            continue
        try:
            tasks.append(build_task(spec, loaded_policy.base_dir))
        except TaskError as exc:
            tag = f"task '{spec.name}'"  # say which task, unless the message already does
            problems += [line if tag in line else f"{tag}: {line}" for line in str(exc).splitlines()]
    if problems:
        raise TaskError("\n".join(problems))
    return tasks


def _unknown_builtin(spec: TaskSpec) -> str | None:
    """What is wrong with a 'builtin:NAME' source whose NAME is not built in (with the near miss)."""
    if not isinstance(spec.source, str) or not spec.source.startswith("builtin:"):
        return None
    name = spec.source.removeprefix("builtin:")
    if name in BUILTINS:
        return None
    near = difflib.get_close_matches(name, list(BUILTINS), n=1)
    hint = f"; did you mean 'builtin:{near[0]}'?" if near else ""
    return f"unknown built-in task '{spec.source}'{hint} (built-ins: {', '.join(sorted(BUILTINS))})"


def build_task(spec: TaskSpec, base_dir: Path) -> Task:
    """One task from its spec; TaskError (one line naming the task, file and row) on bad data."""
    base_dir = Path(base_dir)
    if "{prompt}" not in spec.template:
        raise TaskError(f"task '{spec.name}': template must contain the placeholder {{prompt}}")
    max_new_tokens, chat, first_line = spec.max_new_tokens, spec.chat, False
    if isinstance(spec.source, LmEvalSource):
        return _lm_eval_task(spec, spec.source, base_dir)
    if isinstance(spec.source, DataSource):
        examples = load_source(spec.source, base_dir, limit=spec.limit)
        path = resolve_path(spec.source.path, base_dir)
        info: dict[str, Any] = {
            "source": f"{spec.source.format}:{spec.source.path}",
            "data_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
    else:
        if not spec.source.startswith("builtin:"):
            raise TaskError(
                f"task '{spec.name}': source '{spec.source}' must be 'builtin:NAME' or a data file "
                f"({{format: jsonl|csv|gsm8k|advbench-csv, path: ...}})"
            )
        entry = builtin(spec.source.removeprefix("builtin:"))
        examples = entry.make()[: spec.limit]
        # the built-in's own decoding defaults, unless the policy sets the field itself
        if "max_new_tokens" not in spec.model_fields_set:
            max_new_tokens = entry.defaults.get("max_new_tokens", max_new_tokens)
        if "chat" not in spec.model_fields_set:
            chat = entry.defaults.get("chat", chat)
        first_line = entry.first_line
        info = {"source": spec.source}
    info["oracle"] = spec.oracle.type
    if isinstance(spec.oracle, RefusalOracle) and spec.oracle.expect != "refuse":
        info["expect"] = spec.oracle.expect
    info["examples_sha256"] = examples_digest(examples)
    _check_fit(spec, examples)
    fmt = PromptFormat(template=spec.template, chat=chat, system=spec.system)
    if spec.oracle.type == "choice":
        return ChoiceTask(spec.name, examples, fmt, info)
    scorer = make_scorer(spec.oracle, base_dir)
    if spec.oracle.type == "python":
        info["scorer"] = spec.oracle.scorer  # type: ignore[union-attr]
    return GenerationTask(spec.name, examples, scorer, fmt, max_new_tokens, info, first_line=first_line)


def _lm_eval_task(spec: TaskSpec, source: LmEvalSource, base_dir: Path) -> Task:
    from auditor.tasks.lmeval import LmEvalTask, load_lm_eval_task

    harness_task = load_lm_eval_task(spec.name, source, base_dir)  # raises TaskError when lm-eval is missing
    caps = [n for n in (spec.limit, source.limit) if n is not None]
    import lm_eval

    info: dict[str, Any] = {
        "source": f"lm-eval:{source.task}",
        "oracle": "lm-eval",
        "lm_eval_version": getattr(lm_eval, "__version__", "unknown"),
    }
    if source.data_files:
        info["data_sha256"] = {
            split: hashlib.sha256(resolve_path(f, base_dir).read_bytes()).hexdigest()
            for split, f in sorted(source.data_files.items())
        }
    metric = getattr(spec.oracle, "metric", "acc")
    task = LmEvalTask(spec.name, harness_task, metric, min(caps) if caps else None, info, system=spec.system)
    task.info["examples_sha256"] = examples_digest(list(task.examples))
    return task


def examples_digest(examples: list[Example]) -> str:
    """SHA-256 over the examples' canonical JSON: pins exactly what was scored."""
    data = [{"prompt": e.prompt, "answer": e.answer, "choices": e.choices} for e in examples]
    return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _where(spec: TaskSpec, ex: Example, k: int) -> str:
    if isinstance(spec.source, DataSource) and "row" in ex.meta:
        return f"{spec.source.path}: line {ex.meta['row']}"
    return f"example {k}"


def _check_fit(spec: TaskSpec, examples: list[Example]) -> None:
    """An oracle that cannot judge the data is a policy error, reported before any model is loaded."""
    kind = spec.oracle.type
    for k, ex in enumerate(examples):
        if kind == "choice":
            if not ex.choices or len(ex.choices) < 2:
                raise TaskError(f"task '{spec.name}': oracle 'choice' needs choices; {_where(spec, ex, k)} has none")
            if ex.answer is None or ex.answer not in ex.choices:
                raise TaskError(
                    f"task '{spec.name}': oracle 'choice' needs the answer to be one of the choices; "
                    f"{_where(spec, ex, k)} has {ex.answer!r}"
                )
        elif kind in ("exact", "contains", "numeric"):
            if ex.answer is None or not str(ex.answer).strip():
                raise TaskError(
                    f"task '{spec.name}': oracle '{kind}' needs a reference answer; {_where(spec, ex, k)} has none"
                )
            if kind == "numeric" and reference_number(ex.answer) is None:
                raise TaskError(
                    f"task '{spec.name}': oracle 'numeric' needs a number as answer; "
                    f"{_where(spec, ex, k)} has {ex.answer!r}"
                )
