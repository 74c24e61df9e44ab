"""Benchmark the data stage: read, mask and summarise N log lines over several windows.

    python benchmarks/data_stage.py --lines 1000000 --json
    python benchmarks/data_stage.py --lines 1000000 --distinct --json
    python benchmarks/data_stage.py --lines 1000000 --compress gz --json
    python benchmarks/data_stage.py --lines 1000000 --source s3 --json

By default the lines are the Loghub lines in tests/data/loghub2k cycled to N and
written (before timing starts) as JSON Lines in Opni's shape, one file per window.
With --distinct, most masked lines are unique (random words), which exercises the
bounded summaries. With --compress gz|zst the files are written compressed (gzip level
6, zstd level 3) and decompressed as they stream. With --source s3 they are uploaded
to moto's S3 server (tests/servers/s3_server.py, its own process on loopback, started here)
and read through s3fs, as from a bucket. Prints one JSON object; peak_rss_mb is the
largest RSS of any worker process as the data stage reports it (getrusage; on Linux a
spawned worker's figure includes the parent's RSS at spawn), worker_own_peak_rss_mb
the largest of the workers' own (VmHWM). The parent, which only merges, is reported
apart; the S3 server is not counted.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import gzip
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from benchmarks.loghub import loghub_lines  # noqa: E402
from ops.mask.data_stage import masker_and_cache, peak_rss_mb, summarize_windows  # noqa: E402
from ops.fetch.local_files import plan_shards  # noqa: E402
from ops.fetch.locations import filesystem  # noqa: E402
from ops.fetch.records import RecordFormat, Windows  # noqa: E402

HOUR = 3_600_000
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()


def distinct_lines(n: int, seed: int = 0):
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    for _ in range(n):
        words = [rng.choice(WORDS)] + ["".join(rng.choices(letters, k=rng.randint(4, 9))) for _ in range(6)]
        yield " ".join(words)


SUFFIX = {None: "", "gz": ".gz", "zst": ".zst"}


@contextlib.contextmanager
def open_out(path: Path, compress: str | None):
    """A file to write, compressed as asked (gzip level 6, zstd level 3), streamed."""
    if compress == "gz":
        with gzip.open(path, "wb", compresslevel=6) as f:
            yield f
    elif compress == "zst":
        import zstandard

        with open(path, "wb") as raw, zstandard.ZstdCompressor(level=3).stream_writer(raw) as f:
            yield f
    else:
        with open(path, "wb") as f:
            yield f


def write_text_windows(out: Path, lines_iter, n: int, windows: int, compress: str | None = None) -> None:
    """Plain-text files, one per window: the file's modification time places its lines."""
    per = -(-n // windows)
    it = iter(lines_iter)
    for w in range(windows):
        path = out / f"window-{w:03d}.log{SUFFIX[compress]}"
        with open_out(path, compress) as f:
            k = min(per, n - w * per)
            for start in range(0, k, 10_000):
                f.write("".join(next(it) + "\n" for _ in range(min(10_000, k - start))).encode("utf-8", "replace"))
        mtime_s = (w * HOUR + HOUR // 2) / 1000
        os.utime(path, (mtime_s, mtime_s))


def write_windows(out: Path, lines_iter, n: int, windows: int, compress: str | None = None) -> None:
    per = -(-n // windows)
    it = iter(lines_iter)
    for w in range(windows):
        with open_out(out / f"window-{w:03d}.jsonl{SUFFIX[compress]}", compress) as f:
            k = min(per, n - w * per)
            step = HOUR // max(k, 1)
            buf = []
            for i in range(k):
                buf.append(orjson.dumps({"time": w * HOUR + i * step, "log": next(it), "cluster_id": "bench"}))
                if len(buf) >= 10_000:
                    f.write(b"\n".join(buf) + b"\n")
                    buf = []
            if buf:
                f.write(b"\n".join(buf) + b"\n")


def warm_up(seconds: float, root: str | None = None) -> None:
    """Start-up of a worker: import the data stage and build its Masker (empty caches), and
    the filesystem client of `root` (s3fs imported, no request made)."""
    masker_and_cache(None)
    if root is not None:
        filesystem(root)
    time.sleep(seconds)


def own_peak(seconds: float) -> tuple[int, float]:
    """(pid, this process's own peak RSS in MB): VmHWM, which starts afresh at exec. (On
    Linux, getrusage's ru_maxrss in a spawned worker also carries the parent's peak at
    spawn time, so peak_rss_mb is never below the parent's RSS then.)"""
    time.sleep(seconds)  # one task per worker
    try:
        with open("/proc/self/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        return os.getpid(), kb / 1024
    except (OSError, StopIteration):
        return os.getpid(), peak_rss_mb()


def cycle(lines, n):
    for i in range(n):
        yield lines[i % len(lines)]


def upload_to_s3(folder: Path, stack: contextlib.ExitStack) -> str:
    """Start moto's S3 server (stopped by `stack`), upload `folder`'s files to a bucket, point
    this process's environment (inherited by spawned workers) at it; the folder's URL."""
    from tests.servers.s3_server import S3Server

    server = stack.enter_context(S3Server())
    client = server.client()
    client.create_bucket(Bucket="bench")
    for path in sorted(folder.iterdir()):
        client.upload_file(str(path), "bench", f"logs/{path.name}")
        path.unlink()  # the bucket holds them now
    stack.enter_context(server.environment())
    return "s3://bench/logs/"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--windows", type=int, default=8, help="time windows (hourly partitions), one file each")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--data", type=Path, default=ROOT / "tests" / "data" / "loghub2k")
    ap.add_argument("--distinct", action="store_true", help="mostly unique lines (random words)")
    ap.add_argument("--cache-size", type=int, default=100_000, help="raw-message mask cache; 0 disables it")
    ap.add_argument("--source", default="local", choices=["local", "s3", "opensearch-test"],
                    help="local files; the same files in moto's S3 server on loopback (tests/servers/s3_server.py); "
                         "or the protocol-level test OpenSearch (tests/servers/opensearch_server.py)")
    ap.add_argument("--compress", choices=["gz", "zst"], help="write the files compressed")
    ap.add_argument("--multiline", default="on", choices=["on", "off"],
                    help="join the lines of stack traces as the data stage does by default (java, python, go), or not")
    ap.add_argument("--format", default="jsonl", choices=["jsonl", "text"],
                    help="jsonl: Opni-shaped JSON Lines (default); text: plain-text log files")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    if args.source == "s3" and args.format == "text":
        ap.error("--format text needs --source local: text lines take the file's mtime, which S3 sets at upload")
    if args.source == "opensearch-test":
        if args.compress:
            ap.error("--compress is only for file sources")
        if args.distinct:
            ap.error("--distinct is only implemented for --source local")
        from benchmarks.opensearch_source import run

        out = run(args.lines, workers=args.workers, windows=args.windows, data=args.data, cache_size=args.cache_size)
        print(json.dumps(out) if args.json else "\n".join(f"{k}: {v}" for k, v in out.items()))
        return 0

    with tempfile.TemporaryDirectory(prefix="logloop-bench-") as tmp, contextlib.ExitStack() as stack:
        tmp = Path(tmp)
        source = distinct_lines(args.lines) if args.distinct else cycle(loghub_lines(args.data), args.lines)
        write = write_text_windows if args.format == "text" else write_windows
        write(tmp, source, args.lines, args.windows, args.compress)
        input_mb = sum(p.stat().st_size for p in tmp.iterdir()) / 1e6
        root = str(tmp)
        if args.source == "s3":
            root = upload_to_s3(tmp, stack)  # also sets the environment the workers inherit
        os.sync()  # the setup's disk writeback is not part of the timed work
        fmt = RecordFormat(batch_fields=("cluster_id",))
        windows = Windows([(w * HOUR, (w + 1) * HOUR) for w in range(args.windows)])
        shards = plan_shards(root, fmt, windows)
        extra = {"cache_size": max(1, args.cache_size)} if args.cache_size else {"cache_size": 1}
        t0 = time.perf_counter()
        with cf.ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            # all workers up, with the code imported and the masking rules compiled
            # (process start-up, not data work), before timing: a spawn pool starts a
            # worker per submit only while none is idle, so each task waits a little
            list(pool.map(warm_up, [0.3] * args.workers, [root] * args.workers))
            t0 = time.perf_counter()
            if args.multiline == "on":
                from ops.fetch.multiline import load_multiline

                extra["multiline"] = load_multiline()
            result = summarize_windows(shards, windows, pool=pool, **extra)
            seconds = time.perf_counter() - t0  # the result is whole; pool shutdown is not data work
            own = dict(pool.map(own_peak, [0.5] * args.workers))
    distinct = sum(len(s.counts) for w in result.windows for s in w.summaries.values())
    out = {
        "lines": result.lines,
        "lines_per_s": round(result.lines / seconds, 1),
        "peak_rss_mb": round(result.peak_worker_rss_mb, 1),
        "worker_own_peak_rss_mb": round(max(own.values()), 1),
        "parent_peak_rss_mb": round(peak_rss_mb(), 1),
        "seconds": round(seconds, 2),
        "workers": args.workers,
        "windows": args.windows,
        "distinct_forms_kept": distinct,
        "cache_hit_share": round(result.cache_hits / max(result.lines, 1), 4),
        "mode": "distinct" if args.distinct else "loghub",
        "format": args.format,
        "compress": args.compress or "none",
        "source": args.source,
        "multiline": args.multiline,
        "input_mb": round(input_mb, 1),
        "bad_records": result.bad.total,
    }
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
