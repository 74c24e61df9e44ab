"""Which interpreter `make install` makes the venv from (the Makefile's PYTHON), shown by `make -n`."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = Path("/usr/bin/python3")


def venv_command(tmp_path: Path, *overrides: str) -> str:
    """The command `make install` would run to create a venv that does not exist yet."""
    venv = tmp_path / "venv"
    out = subprocess.run(["make", "-n", "install", f"VENV={venv}", *overrides], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    [line] = [line for line in out.stdout.splitlines() if "-m venv" in line]
    return line


def system_python_can_make_a_venv() -> bool:
    if not SYSTEM_PYTHON.exists():
        return False
    probe = subprocess.run([str(SYSTEM_PYTHON), "-c", "import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 10))"],
                           capture_output=True, timeout=60)
    return probe.returncode == 0


def test_the_venv_is_made_from_the_distributions_python_where_it_can_and_from_python3_otherwise(tmp_path):
    expected = str(SYSTEM_PYTHON) if system_python_can_make_a_venv() else "python3"
    assert venv_command(tmp_path).endswith(f"|| {expected} -m venv {tmp_path / 'venv'}")


def test_python_given_to_make_wins(tmp_path):
    assert venv_command(tmp_path, "PYTHON=/opt/py/bin/python3.12").endswith(
        f"|| /opt/py/bin/python3.12 -m venv {tmp_path / 'venv'}")
