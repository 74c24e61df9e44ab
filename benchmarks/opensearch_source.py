"""Benchmark the data stage reading from OpenSearch (the fake server, real HTTP + JSON).

    python benchmarks/opensearch_source.py --lines 1000000 --json
    python benchmarks/opensearch_source.py --lines 3000000 --json

N Loghub lines from tests/data/loghub2k, cycled and spread over hourly windows
exactly as benchmarks/data_stage.py writes them, are served by tests/servers/opensearch_server.py
(documents generated on demand, so N costs no memory) in separate processes; the data
stage reads them with OpenSearchLogSource (PIT slices, search_after pages) in spawned
workers. Prints one JSON object; peak_rss_mb is the largest RSS of any data-stage
worker (the server processes are not counted; the parent is reported apart).
`run(lines, workers, ...)` is the importable entry point.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ops.mask.data_stage import peak_rss_mb, summarize_windows  # noqa: E402
from ops.fetch.records import Windows  # noqa: E402
from benchmarks.loghub import loghub_lines  # noqa: E402  (the same Loghub lines as the local benchmark)

HOUR = 3_600_000
DEFAULT_DATA = ROOT / "tests" / "data" / "loghub2k"


def start_server(lines: list[str], n: int, windows: int, processes: int):
    """The fake OpenSearch serving n generated documents as index "logs"; (process, url)."""
    from tests.servers.opensearch_server import serve_generated

    ctx = multiprocessing.get_context("spawn")
    parent_end, child_end = ctx.Pipe()
    proc = ctx.Process(target=serve_generated, args=(child_end, n, lines, windows, processes), daemon=True)
    proc.start()
    if not parent_end.poll(60):
        proc.terminate()
        raise RuntimeError("the fake OpenSearch did not start")
    return proc, f"http://127.0.0.1:{parent_end.recv()}"


def run(
    lines: int,
    workers: int | None = None,
    windows: int = 8,
    data: Path = DEFAULT_DATA,
    slices: int | None = None,
    page_size: int = 5000,
    server_processes: int | None = None,
    cache_size: int = 100_000,
) -> dict:
    from resources.opensearch_source import OpenSearchLogSource

    workers = workers or os.cpu_count() or 1
    slices = slices or workers
    server_processes = server_processes or max(1, min(8, (os.cpu_count() or 2) // 2))
    proc, url = start_server(loghub_lines(data), lines, windows, server_processes)
    try:
        source = OpenSearchLogSource(hosts=[url], batch_fields=["cluster_id"], slices=slices, page_size=page_size)
        bounds = Windows([(w * HOUR, (w + 1) * HOUR) for w in range(windows)])
        with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(time.sleep, [0.2] * workers))  # all workers up before timing
            t0 = time.perf_counter()
            shards = source.shards(bounds)
            result = summarize_windows(shards, bounds, pool=pool, cache_size=max(1, cache_size))
            seconds = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.join(10)
    return {
        "lines": result.lines,
        "lines_per_s": round(result.lines / seconds, 1),
        "peak_rss_mb": round(result.peak_worker_rss_mb, 1),
        "parent_peak_rss_mb": round(peak_rss_mb(), 1),
        "seconds": round(seconds, 2),
        "workers": workers,
        "slices": slices,
        "page_size": page_size,
        "server_processes": server_processes,
        "windows": windows,
        "bad_records": result.bad.total,
        "source": "opensearch-test",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--slices", type=int, default=None, help="PIT slices (default: workers)")
    ap.add_argument("--page-size", type=int, default=5000)
    ap.add_argument("--server-processes", type=int, default=None, help="fake server processes (default: CPUs/2, max 8)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = run(args.lines, args.workers, args.windows, args.data, args.slices, args.page_size, args.server_processes)
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
