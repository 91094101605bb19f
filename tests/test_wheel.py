"""The package works installed: build the wheel, install it into a fresh venv, run it from an empty folder.

The fresh venv borrows this interpreter's site-packages for the dependencies (torch and friends are
already here; a CI machine has no time or network for them), while `auditor` itself comes only from
the wheel: the editable install of the checkout is never activated there (a .pth path line adds a
folder to sys.path without running the .pth files inside it), and PYTHONPATH is cleared.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "reports" / "example" / "certificate.json"


def _env() -> dict[str, str]:
    # no PYTHONPATH: the checkout on it would count as an installed `auditor` (pip would skip the wheel)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)


def test_every_source_package_is_listed_for_the_wheel() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "auditor").rglob("__init__.py")}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"
    mapped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    assert mapped == {
        "auditor.templates": "templates",
        "auditor.policies": "policies",
        "auditor.refusal_adapter": "examples/safety/adapter",
    }


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; returns its bin folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # build from a clean copy: no stale build/ folder, nothing written to the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("auditor", "templates", "policies", "examples/safety/adapter"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp / "dist"
    build = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(dist)]
        + ["."],
        cwd=src,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("auditor-*.whl")
    venv = tmp / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    assert made.returncode == 0, made.stderr
    (venv_site,) = venv.glob("lib/python*/site-packages")
    (venv_site / "_borrowed_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    py = venv / "bin" / "python"
    inst = _run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        cwd=tmp,
    )
    assert inst.returncode == 0, inst.stderr
    return venv / "bin"


def test_installed_wheel_runs_from_an_empty_folder(installed: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    where = _run([str(installed / "python"), "-c", "import auditor; print(auditor.__file__)"], empty)
    assert where.returncode == 0, where.stderr
    assert str(installed.parent) in where.stdout, f"auditor imported from {where.stdout} instead of the wheel"

    validate = _run([str(installed / "auditor"), "validate"], empty)
    print(validate.stdout, validate.stderr)
    assert validate.returncode == 0, validate.stderr
    assert "default.yaml: valid" in validate.stdout and str(installed.parent) in validate.stdout

    out = empty / "rendered"
    render = _run([str(installed / "auditor"), "render", str(EXAMPLE), "--out", str(out)], empty)
    print(render.stdout, render.stderr)
    assert render.returncode == 0, render.stderr
    assert "Traceback" not in render.stderr
    html = (out / "certificate.html").read_text(encoding="utf-8")
    assert "UNSIGNED" in html and "<style>" in html
    assert (out / "certificate.pdf").read_bytes().startswith(b"%PDF")

    # the refusal built-in's adapter ships in the wheel, with the digests its loader pins
    code = (
        "from auditor.model.checkpoint import BUILTIN_ADAPTERS, verify_adapter_files; "
        "s = BUILTIN_ADAPTERS['smollm2-135m-instruct-refusal']; "
        "verify_adapter_files('smollm2-135m-instruct-refusal', s); print(s.adapter_dir)"
    )
    adapter = _run([str(installed / "python"), "-c", code], empty)
    assert adapter.returncode == 0, adapter.stderr
    assert str(installed.parent) in adapter.stdout and "refusal_adapter" in adapter.stdout

    helped = _run([str(installed / "auditor"), "certify", "--help"], empty)
    assert helped.returncode == 0, helped.stderr
    assert "Usage: auditor certify" in helped.stdout
    assert sorted(p.name for p in empty.iterdir()) == ["rendered"]  # nothing else written where it ran
