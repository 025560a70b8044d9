"""The built wheel carries the migrations: a non-editable install works from any directory."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from uniqc_store import HEAD_REVISION
from uniqc_store.schema import STORE_HEAD

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _run(args: list, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{args}\n{out.stdout}\n{out.stderr}"
    return out


@pytest.mark.slow
def test_a_wheel_installed_in_a_fresh_venv_creates_and_upgrades_databases_anywhere(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, PROJECT_ROOT], cwd=tmp_path)
    (wheel,) = dist.glob("uniqc_store-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "uniqc_store/migrations/env.py" in names
    revisions = sorted(path.name for path in (PROJECT_ROOT / "migrations" / "versions").glob("[0-9]*_*.py"))
    assert revisions[-1].startswith(f"{HEAD_REVISION}_")
    assert {f"uniqc_store/migrations/versions/{name}" for name in revisions} <= set(names)
    assert "uniqc_store/py.typed" in names

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    _run([venv / "bin" / "pip", "install", "-q", wheel], cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    home = tmp_path / "home"
    env = {"HOME": str(home), "PATH": f"{venv / 'bin'}:/usr/bin:/bin"}
    code = (
        "import uniqc_store, pathlib\n"
        "from uniqc_store import TaskStore, TaskInfo, schema\n"
        "assert 'site-packages' in uniqc_store.__file__, uniqc_store.__file__\n"
        "assert schema.script_location() == pathlib.Path(uniqc_store.__file__).parent / 'migrations'\n"
        "s = TaskStore('cache'); s.save(TaskInfo('t', 'sim')); print(s.count())\n"
        "schema.downgrade('base', cache_dir='cache'); schema.upgrade(cache_dir='cache')\n"
        "print(TaskStore('cache').schema_info()['revision'])\n"
    )
    out = _run([venv / "bin" / "python", "-c", code], cwd=elsewhere, env=env)
    assert out.stdout.split() == ["1", HEAD_REVISION]
    info = _run([venv / "bin" / "uniqc-store", "info"], cwd=elsewhere, env=env)
    assert f"{HEAD_REVISION} + {STORE_HEAD} (head)" in info.stdout
    assert (home / ".uniqc" / "cache" / "tasks.sqlite").exists()
