"""Files that ship with the package: the certificate templates and the example policies.

The source tree keeps them at the top level (templates/, policies/); the wheel maps them into the
package as `auditor/templates` and `auditor/policies` (see pyproject.toml), so an installed copy
finds them through importlib.resources and a source checkout finds them beside the package.
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
