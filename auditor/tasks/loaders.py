"""Read benchmark examples from JSONL / CSV files, GSM8K and AdvBench.

Every error names the file and the line (or column) at fault. Rows keep their line number in
`meta['row']` so later checks (an oracle that needs answers) can point at it too.
"""

from __future__ import annotations

import csv
import difflib
import json
import string
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from auditor.errors import TaskError
from auditor.policy.tasks import DataSource
from auditor.tasks.base import Example
from auditor.tasks.oracles import reference_number

OUR_FIELDS = ("prompt", "answer", "choices")
_DEFAULTS = {
    "jsonl": {"prompt": "prompt", "answer": "answer", "choices": "choices"},
    "csv": {"prompt": "prompt", "answer": "answer", "choices": "choices"},
    "gsm8k": {"prompt": "question", "answer": "answer"},
    "advbench-csv": {"prompt": "goal"},
}


def resolve_path(path: str, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base_dir / p


def load_source(source: DataSource, base_dir: Path, limit: int | None = None) -> list[Example]:
    """The first `limit` (and `source.limit`) examples of a data file, paths relative to `base_dir`."""
    path = resolve_path(source.path, base_dir)
    unknown = sorted(set(source.fields) - set(OUR_FIELDS))
    if unknown:
        raise TaskError(f"{path}: fields: unknown field(s) {unknown}; known: {', '.join(OUR_FIELDS)}")
    if not path.is_file():
        raise TaskError(f"{path}: data file not found")
    keys = {**_DEFAULTS[source.format], **source.fields}
    explicit = set(source.fields)  # a field the user mapped must be in every row
    caps = [n for n in (limit, source.limit) if n is not None]
    cap = min(caps) if caps else None
    rows = _jsonl_rows(path) if source.format in ("jsonl", "gsm8k") else _csv_rows(path, keys, explicit)
    out: list[Example] = []
    for line, row in rows:
        if cap is not None and len(out) >= cap:
            break
        if source.format == "gsm8k":
            out.append(_gsm8k_example(path, line, row, keys))
        elif source.format == "advbench-csv":
            prompt = _text(path, line, row, keys["prompt"], "prompt", required=True)
            meta = {"row": line, "target": row.get("target")} if row.get("target") else {"row": line}
            out.append(Example(prompt=str(prompt), meta=meta))
        else:
            out.append(_generic_example(path, line, row, keys, explicit))
    if not out:
        raise TaskError(f"{path}: no examples")
    return out


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with _open(path) as fh:
        for n, raw in enumerate(_lines(path, fh), start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise TaskError(f"{path}: line {n}: not valid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise TaskError(f"{path}: line {n}: expected a JSON object, got {type(row).__name__}")
            yield n, row


def _csv_rows(path: Path, keys: dict[str, str], explicit: set[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    with _open(path) as fh:
        reader = csv.DictReader(_lines(path, fh))
        header = reader.fieldnames or []
        needed = {"prompt"} | explicit
        missing = [ours for ours in sorted(needed) if keys[ours] not in header]
        if missing:
            raise TaskError(
                "\n".join(
                    f"{path}: no column '{keys[ours]}' ({ours}); columns are: {', '.join(header) or 'none'}"
                    f"{_map_hint(ours, keys[ours], header)}"
                    for ours in missing
                )
            )
        try:
            for row in reader:
                if None in row:
                    raise TaskError(f"{path}: line {reader.line_num}: more values than header columns")
                yield reader.line_num, row
        except csv.Error as exc:
            raise TaskError(f"{path}: line {reader.line_num}: malformed CSV ({exc})") from exc


def _open(path: Path):
    try:
        return open(path, encoding="utf-8-sig", newline="")  # utf-8-sig: spreadsheets write a BOM
    except OSError as exc:
        raise TaskError(f"{path}: cannot read ({exc.strerror})") from exc


def _lines(path: Path, fh) -> Iterator[str]:
    try:
        yield from fh
    except UnicodeDecodeError as exc:
        raise TaskError(f"{path}: not UTF-8 text (byte {exc.start})") from exc


def _map_hint(ours: str, key: str, present: Sequence[str]) -> str:
    """How to point our field at one of the file's columns: `fields: {prompt: question}`."""
    near = difflib.get_close_matches(key, list(present), n=1, cutoff=0.5)
    column = near[0] if near else (present[0] if present else "COLUMN")
    return f"; map it in the policy with `fields: {{{ours}: {column}}}`"


def _text(path: Path, line: int, row: dict[str, Any], key: str, ours: str, required: bool) -> Any:
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            if key not in row:
                keys = list(row)
                raise TaskError(
                    f"{path}: line {line}: missing field '{key}' ({ours}); the row has: {', '.join(keys) or 'nothing'}"
                    f"{_map_hint(ours, key, keys)}"
                )
            raise TaskError(f"{path}: line {line}: missing field '{key}' ({ours}): the value is empty")
        return None
    return value


def _generic_example(path: Path, line: int, row: dict[str, Any], keys: dict[str, str], explicit: set[str]) -> Example:
    prompt = _text(path, line, row, keys["prompt"], "prompt", required=True)
    if not isinstance(prompt, str):
        raise TaskError(f"{path}: line {line}: field '{keys['prompt']}' (prompt) must be text")
    answer = _text(path, line, row, keys["answer"], "answer", required="answer" in explicit)
    raw_choices = _text(path, line, row, keys["choices"], "choices", required="choices" in explicit)
    meta: dict[str, Any] = {"row": line}
    if isinstance(answer, list):  # a list of accepted answers: the first is the reference
        if not answer:
            raise TaskError(f"{path}: line {line}: field '{keys['answer']}' (answer) is an empty list")
        meta["aliases"] = [str(a) for a in answer[1:]]
        answer = answer[0]
    choices = _parse_choices(path, line, raw_choices, keys["choices"]) if raw_choices is not None else None
    if choices is not None and answer is not None:
        answer = _resolve_choice(path, line, answer, choices, keys["answer"])
    return Example(prompt=prompt, answer=None if answer is None else str(answer), choices=choices, meta=meta)


def _parse_choices(path: Path, line: int, raw: Any, key: str) -> tuple[str, ...]:
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("["):
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as exc:
                raise TaskError(f"{path}: line {line}: field '{key}' (choices) is not a JSON list") from exc
        else:
            raw = [c.strip() for c in text.split("|")]
    if not isinstance(raw, list) or len(raw) < 2 or not all(isinstance(c, (str, int, float)) for c in raw):
        raise TaskError(f"{path}: line {line}: field '{key}' (choices) needs a list of at least two texts")
    choices = tuple(str(c) for c in raw)
    if any(not c.strip() for c in choices):
        raise TaskError(f"{path}: line {line}: field '{key}' (choices) has an empty choice")
    return choices


def _resolve_choice(path: Path, line: int, answer: Any, choices: tuple[str, ...], key: str) -> str:
    """The correct choice's text, from the text itself, an index, or a letter (MMLU style)."""
    text = str(answer).strip()
    if text in choices:
        return text
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices):
        return choices[answer]
    if text.isdigit() and int(text) < len(choices):
        return choices[int(text)]
    letters = string.ascii_uppercase[: len(choices)]
    if len(text) == 1 and text.upper() in letters:
        return choices[letters.index(text.upper())]
    raise TaskError(f"{path}: line {line}: field '{key}' (answer) {text!r} is not one of the choices")


def _gsm8k_example(path: Path, line: int, row: dict[str, Any], keys: dict[str, str]) -> Example:
    question = _text(path, line, row, keys["prompt"], "prompt", required=True)
    solution = _text(path, line, row, keys["answer"], "answer", required=True)
    if not isinstance(solution, str) or "####" not in solution:
        field = keys["answer"]
        raise TaskError(f"{path}: line {line}: field '{field}' (answer) has no '#### N' final answer")
    number = reference_number(solution)
    if number is None:
        raise TaskError(f"{path}: line {line}: no number after '####' in field '{keys['answer']}' (answer)")
    answer = str(int(number)) if number.is_integer() else repr(number)
    return Example(prompt=str(question), answer=answer, meta={"row": line, "solution": solution})
