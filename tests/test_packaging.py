"""`pip install .` (README's first command) ships everything the agent needs at run time."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_contains_migrations_templates_and_static_files(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("seat_agent-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {
        str(p.relative_to(ROOT))
        for pattern in (
            "agent/storage/migrations/**/*.py",
            "agent/web/templates/**/*",
            "agent/web/static/**/*",
        )
        for p in ROOT.glob(pattern)
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert wanted, "nothing to look for"
    assert wanted <= names, sorted(wanted - names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "seat-agent = agent.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
