"""The Loghub lines the data-stage benchmarks feed in (benchmarks/data_stage.py and
benchmarks/opensearch_source.py read the same ones)."""

from __future__ import annotations

from pathlib import Path


def loghub_lines(data: Path) -> list[str]:
    """The non-blank lines of every */*_2k.log file under `data` (Loghub's 2k samples), in file order."""
    files = sorted(data.glob("*/*_2k.log"))
    if not files:
        raise SystemExit(f"no */*_2k.log files under {data}")
    lines = []
    for f in files:
        lines.extend(line for line in f.read_text(errors="replace").splitlines() if line.strip())
    return lines
