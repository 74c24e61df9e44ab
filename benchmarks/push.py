"""Sample registration throughput: `push` of N log lines into SQLite and into the TDengine fake.

    python benchmarks/push.py [--lines 1000000] [--chunk 20000] [--skip-tdengine]

A file of N plain-text log lines (~110 bytes each) is written first (untimed). Each target then
runs in a fresh spawned process that reads the file and registers every line as a sample of one
batch (`resources.samples.push`: read, count bad lines, draw the split flag, stamp unique
nanoseconds, write chunks). The process's peak RSS is read from /proc (VmHWM). SQLite is also
run at N/10, so memory can be compared across a 10x difference in lines (flat = about equal).
The TDengine fake (tests/servers/taos_rest_server.py) runs in this parent process, so its in-memory
rows are not in the pusher's RSS; it parses SQL in Python, so its figure is the fake's, not
TDengine's.

Prints JSON: {lines, sqlite: {samples_per_s, seconds, peak_rss_mb, counted}, sqlite_tenth: {...},
tdengine_fake: {...}}. The aim on the 2-core CI machine: >= 100,000 samples/s into SQLite.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_lines(path: Path, n: int) -> None:
    with open(path, "w") as f:
        for i in range(n):
            f.write(f"2026-11-30 04:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d} INFO [svc-{i % 7}] "
                    f"GET /api/v1/items/{i * 7919 % 100000} -> 200 ({i % 97} ms) traceId={i * 2654435761 % 2**32:08x}\n")


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _run(table, path: str, chunk: int, q) -> None:
    sys.path.insert(0, str(ROOT))
    from resources.samples import push

    t0 = time.perf_counter()
    with open(path, "rb") as f:
        stats = push("bench/push", f, table, seed=1, chunk=chunk)
    seconds = time.perf_counter() - t0
    q.put({"registered": stats.registered, "bad": stats.bad.total, "seconds": round(seconds, 3),
           "samples_per_s": round(stats.registered / seconds), "peak_rss_mb": round(_peak_rss_mb(), 1),
           "counted": table.count("bench/push")})


def measure(table, path: Path, chunk: int) -> dict:
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_run, args=(table, str(path), chunk, q))
    p.start()
    out = q.get()
    p.join()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=20_000)
    ap.add_argument("--skip-tdengine", action="store_true")
    args = ap.parse_args()

    from ops.secret import Secret
    from resources.sql_samples import SQLSamples
    from resources.tdengine_samples import TDengineSamples

    out = {"lines": args.lines, "chunk": args.chunk}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        big, small = tmp / "lines.log", tmp / "tenth.log"
        write_lines(big, args.lines)
        write_lines(small, max(1, args.lines // 10))
        out["sqlite"] = measure(SQLSamples(f"sqlite:///{tmp / 'a.sqlite'}"), big, args.chunk)
        out["sqlite_tenth"] = measure(SQLSamples(f"sqlite:///{tmp / 'b.sqlite'}"), small, args.chunk)
        if not args.skip_tdengine:
            from tests.servers.taos_rest_server import FakeTaosAdapter

            with FakeTaosAdapter(password="bench") as server:
                out["tdengine_fake"] = measure(TDengineSamples(server.url, "bench", password=Secret("bench")), big,
                                               args.chunk)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
