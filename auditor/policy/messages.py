"""Every validation problem of a policy as one line each, with a suggestion on a near miss.

pydantic reports errors with a location tuple; this turns each into
`FILE: field 'tasks[0].oracle.type': PROBLEM; did you mean 'contains'?`, walking the policy's
models to know which names were valid where (unknown keys, misspelt choices, unknown oracle types).
"""

from __future__ import annotations

import difflib
import re
import typing
from typing import Any

from pydantic import BaseModel, ValidationError


def did_you_mean(word: str, options: typing.Iterable[str]) -> str:
    """'; did you mean 'x'?' for the closest option (difflib), or '' when nothing is near."""
    near = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f"; did you mean '{near[0]}'?" if near else ""


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through list, Optional, unions and Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        out += _models_in(arg)
    return out


def _model_at(root: type[BaseModel], loc: tuple[int | str, ...], branches: dict[str, type[BaseModel]]) -> Any:
    """The model whose field `loc[-1]` is, or None when the location leaves the models."""
    model: type[BaseModel] | None = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if part in branches:
            model = branches[part]
            continue
        if model is None or part not in model.model_fields:
            return None
        candidates = _models_in(model.model_fields[part].annotation)
        model = candidates[0] if len(candidates) == 1 else None  # a union: the branch name comes next
    return model


def field_path(loc: tuple[int | str, ...], branches: dict[str, type[BaseModel]]) -> str:
    """'tasks[0].oracle.type' from pydantic's location, union branch names left out."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in branches or part in ("str", "source:name"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _suggestion(err: Any, root: type[BaseModel], branches: dict[str, type[BaseModel]]) -> str:
    kind, loc, given = err["type"], tuple(err["loc"]), err.get("input")
    if kind == "extra_forbidden":
        model = _model_at(root, loc, branches)
        if model is not None:
            known = list(model.model_fields)
            return did_you_mean(str(loc[-1]), known) or f" (fields here: {', '.join(known)})"
    if kind in ("literal_error", "enum") and isinstance(given, str):
        return did_you_mean(given, re.findall(r"'([^']*)'", str(err.get("ctx", {}).get("expected", ""))))
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return did_you_mean(str(ctx.get("tag", "")), re.findall(r"'([^']*)'", str(ctx.get("expected_tags", ""))))
    return ""


def error_lines(
    exc: ValidationError, origin: str, root: type[BaseModel], branches: dict[str, type[BaseModel]]
) -> list[str]:
    """One line per problem: file, field, problem, suggestion."""
    lines = []
    for err in exc.errors():
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "union_tag_invalid":
            ctx = err.get("ctx", {})
            msg = f"unknown type '{ctx.get('tag')}' (one of {ctx.get('expected_tags')})"
        where = field_path(tuple(err["loc"]), branches)
        lines.append(f"{origin}: field '{where}': {msg}{_suggestion(err, root, branches)}")
    return list(dict.fromkeys(lines))  # the same problem reported by two union branches shows once


# re-exported for callers that build their own messages (e.g. unknown task names)
__all__ = ["did_you_mean", "error_lines", "field_path"]
