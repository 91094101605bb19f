"""The files besides the model and the policy that decide an audit's outcome: scorers and data.

A python scorer decides every 0/1 outcome and a data file decides the examples, so both are
recorded on the certificate with their sha256 and become subjects of the signed statement;
`auditor verify` re-hashes them. Paths are recorded as the policy wrote them (relative to it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from auditor.certificate.schema import AttestedFile
from auditor.model.checkpoint import sha256_file
from auditor.policy.schema import LoadedPolicy
from auditor.policy.tasks import DataSource, PythonOracle


def _scorer_file(scorer: str, base_dir: Path) -> tuple[str, Path] | None:
    """(recorded path, file) of a `file.py:function` or `package.module:function` scorer."""
    target = scorer.rpartition(":")[0]
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser()
        return target, path if path.is_absolute() else base_dir / path
    try:
        spec = importlib.util.find_spec(target)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return None
    return target, Path(spec.origin)


def policy_files(loaded: LoadedPolicy) -> list[AttestedFile]:
    """Every scorer and data file the policy's tasks read, hashed now (one entry per file)."""
    seen: dict[tuple[str, str], AttestedFile] = {}
    for task in loaded.policy.tasks:
        found: list[tuple[str, str, Path]] = []
        if isinstance(task.source, DataSource):
            path = Path(task.source.path).expanduser()
            found.append(("data", task.source.path, path if path.is_absolute() else loaded.base_dir / path))
        if isinstance(task.oracle, PythonOracle) and (hit := _scorer_file(task.oracle.scorer, loaded.base_dir)):
            found.append(("scorer", *hit))
        for role, name, path in found:
            if (role, name) not in seen and path.is_file():
                seen[(role, name)] = AttestedFile(
                    role=role, path=name, sha256=sha256_file(path), size=path.stat().st_size
                )
    return sorted(seen.values(), key=lambda f: (f.role, f.path))


def subject_name(f: AttestedFile) -> str:
    return f"{f.role}:{f.path}"
