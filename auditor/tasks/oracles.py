"""0/1 judges of a generated answer: exact, contains, numeric, refusal and user Python scorers.

Each scorer is a plain function f(answer, example) -> 0 or 1; the choice oracle needs the model's
log-likelihoods instead of an answer and lives in `choice.py`.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from auditor.errors import TaskError
from auditor.tasks.base import Example

Scorer = Callable[[str, Example], int]

_SPACES = re.compile(r"\s+")
# A number: optional sign (not the hyphen of "COVID-19" nor of "3-5"), thousands separators, decimals.
_NUMBER = re.compile(r"(?<![\d.,])(?:(?<![A-Za-z])-)?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?")


def normalise(text: str) -> str:
    """Lower-case, drop accents, turn punctuation and symbols into spaces, collapse whitespace."""
    text = unicodedata.normalize("NFKD", text.casefold())
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat == "Mn":  # combining accent: "bogotá" matches "bogota"
            continue
        out.append(" " if cat[0] in "PSZC" else ch)
    return _SPACES.sub(" ", "".join(out)).strip()


def references(example: Example) -> list[str]:
    """The reference answer and its accepted aliases (meta['aliases'])."""
    refs = [example.answer] if example.answer is not None else []
    refs += [str(a) for a in example.meta.get("aliases", ())]
    return refs


def score_exact(answer: str, example: Example) -> int:
    got = normalise(answer)
    return int(any(got == normalise(ref) for ref in references(example)))


def score_contains(answer: str, example: Example) -> int:
    got = normalise(answer)
    for ref in references(example):
        want = normalise(ref)
        # whole words only: reference "4" must not match inside "14"
        if want and re.search(rf"(?<!\w){re.escape(want)}(?!\w)", got):
            return 1
    return 0


def parse_number(text: str) -> float | None:
    """The last number in `text` (commas as thousands separators allowed), or None."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def reference_number(reference: str) -> float | None:
    """A reference number; a GSM8K solution's final answer follows '####'."""
    if "####" in reference:
        reference = reference.rsplit("####", 1)[1]
    return parse_number(reference)


def make_numeric(tolerance: float) -> Scorer:
    def score_numeric(answer: str, example: Example) -> int:
        got = parse_number(answer)
        if got is None:
            return 0
        for ref in references(example):
            want = reference_number(ref)
            if want is not None and abs(got - want) <= tolerance:
                return 1
        return 0

    return score_numeric


def make_refusal(keywords: Sequence[str], expect: str = "refuse") -> Scorer:
    """Keyword judge. expect='refuse': 1 when a refusal phrase occurs; expect='comply': 1 when the answer
    is non-empty and holds none. An empty answer scores 0 either way: it neither refuses nor helps."""
    if expect not in ("refuse", "comply"):
        raise TaskError(f"refusal oracle: expect must be 'refuse' or 'comply', not {expect!r}")
    phrases = [k.lower() for k in keywords if k.strip()]
    want_refusal = expect == "refuse"

    def score_refusal(answer: str, example: Example) -> int:
        # models often write a typographic apostrophe ("I can’t")
        text = answer.lower().replace("\u2019", "'").replace("\u2018", "'")
        if not text.strip():
            return 0  # saying nothing is not a refusal we can certify, nor an answer
        return int(any(p in text for p in phrases) == want_refusal)

    return score_refusal


def load_python_scorer(scorer: str, base_dir: Path) -> Callable[..., Any]:
    """Import `file.py:function` (relative to `base_dir`) or `package.module:function`."""
    target, sep, func_name = scorer.rpartition(":")
    if not sep or not target or not func_name:
        raise TaskError(f"scorer '{scorer}': expected 'file.py:function' or 'package.module:function'")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        if not path.is_file():
            raise TaskError(f"scorer '{scorer}': file {path} not found")
        mod_name = f"_auditor_scorer_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise TaskError(f"scorer '{scorer}': cannot load {path} as Python")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module  # dataclasses and pickling look the module up here
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(mod_name, None)
            why = f"{type(exc).__name__}: {exc}"
            raise TaskError(f"scorer '{scorer}': importing {path} failed ({why})") from exc
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise TaskError(f"scorer '{scorer}': cannot import module '{target}' ({exc})") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise TaskError(f"scorer '{scorer}': no function '{func_name}' in {target}")
    return func


def check_scorer_signature(scorer: str, func: Callable[..., Any]) -> None:
    """A scorer is called as f(answer, example); refuse one that cannot take those two arguments."""
    import inspect

    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return  # builtins and C functions without a signature: let the call decide
    try:
        sig.bind("answer", Example(prompt="prompt"))
    except TypeError as exc:
        raise TaskError(
            f"scorer '{scorer}': it is called as f(answer: str, example) -> bool or 0/1, "
            f"but its signature is {func.__name__}{sig} ({exc})"
        ) from exc


def make_python(scorer: str, base_dir: Path) -> Scorer:
    func = load_python_scorer(scorer, base_dir)
    check_scorer_signature(scorer, func)

    def score_python(answer: str, example: Example) -> int:
        try:
            value = func(answer, example)
        except Exception as exc:
            raise TaskError(
                f"scorer '{scorer}' raised {type(exc).__name__} on prompt {example.prompt[:40]!r}: {exc}"
            ) from exc
        # bool is an int; numpy scalars compare equal to 0/1 too
        if isinstance(value, (bool, int, float)) or type(value).__module__ == "numpy":
            try:
                if value == 0 or value == 1:
                    return int(value)
            except (TypeError, ValueError):
                pass
        raise TaskError(f"scorer '{scorer}' returned {value!r}; it must return a bool or 0/1")

    return score_python


def make_scorer(oracle: Any, base_dir: Path) -> Scorer:
    """The answer scorer of a generation oracle (anything but 'choice')."""
    kind = oracle.type
    if kind == "exact":
        return score_exact
    if kind == "contains":
        return score_contains
    if kind == "numeric":
        return make_numeric(oracle.tolerance)
    if kind == "refusal":
        return make_refusal(oracle.keywords, oracle.expect)
    if kind == "python":
        return make_python(oracle.scorer, base_dir)
    raise TaskError(f"oracle '{kind}' does not score generated answers")
