"""Files that ship with the package: the certificate templates, the example policies, the refusal adapter.

The source tree keeps them outside the package (templates/, policies/, examples/safety/adapter/); the
wheel maps them into it as `auditor/templates`, `auditor/policies` and `auditor/refusal_adapter` (see
pyproject.toml), so an installed copy finds them through importlib.resources and a source checkout
finds them where they are.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def resource_dir(name: str) -> Path:
    """The folder of packaged files `name` ('templates' or 'policies') as a real path."""
    packaged = resources.files("auditor") / name
    if packaged.is_dir():
        # Installed wheels are unpacked on disk; a zipped install would need as_file, which we do not support.
        return Path(str(packaged))
    source = _SOURCE_ROOT / name
    if source.is_dir():
        return source
    raise FileNotFoundError(f"auditor's {name}/ folder is missing from this installation")


def templates_dir() -> Path:
    """Jinja templates and CSS of the HTML/PDF certificate."""
    return resource_dir("templates")


def policies_dir() -> Path:
    """The shipped policies (default.yaml and the examples)."""
    return resource_dir("policies")


def default_policy() -> Path:
    """The policy `auditor validate` and `auditor certify` use when none is given."""
    return policies_dir() / "default.yaml"


def refusal_adapter_dir() -> Path:
    """The LoRA adapter of the built-in `smollm2-135m-instruct-refusal`: packaged, else the source tree's.

    Never raises: a missing file is reported when the built-in is loaded (its digests are pinned there).
    """
    packaged = resources.files("auditor") / "refusal_adapter"
    if packaged.is_dir():
        return Path(str(packaged))
    return _SOURCE_ROOT / "examples" / "safety" / "adapter"
