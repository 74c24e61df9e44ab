"""Benchmark the data stage reading from OpenSearch: a real node, or the protocol-level fake.

    python benchmarks/opensearch_source.py --lines 1000000 --json                  # the fake
    python benchmarks/opensearch_source.py --server real --lines 1000000 --json    # a real node, and the fake
    python benchmarks/opensearch_source.py --server real --lines 1000000,3000000 --json  # one node, both sizes
    python benchmarks/opensearch_source.py --server real --lines 100000 --profile --json

N Loghub lines from tests/data/loghub2k, cycled and spread over hourly windows
exactly as benchmarks/data_stage.py writes them, are read by the data stage with
OpenSearchLogSource (PIT slices, search_after pages) in spawned workers.

- `--server fake`: tests/servers/opensearch_server.py serves them (documents generated on
  demand, so N costs no memory) in separate processes.
- `--server real`: a single OpenSearch node (tests/servers/opensearch_node.py: the version
  `--version`, installed from Maven Central when missing, a 512 MB heap) is started, the N
  documents are bulk-loaded into a 2-shard index (`_bulk` bodies of 10,000 documents built
  with orjson, two requests in flight, refresh off while loading; `log` stored, not indexed,
  since the read never searches it), and read; then the fake is read the same way in the same
  run, for comparison (`fake`). Several sizes (`--lines 1000000,3000000`) share one node and one
  load: the larger sizes read the loaded index and `_clone`s of it (hard-linked segments), so
  3M documents cost the load of 1M; the read sees every copy's documents as its own. `--profile` also reads one slice in this process under cProfile
  and splits its time into the server's own time (`took`), the wait for the answer beyond it
  (network, HTTP and the server's serialisation), JSON decoding, turning hits into chunks, and
  masking and summarising.

Prints one JSON object; peak_worker_rss_mb (peak_rss_mb for the fake alone) is the largest RSS
of any data-stage worker (the servers are not counted; the parent is reported apart).
`run(lines, workers, ...)` is the importable entry point for the fake, `run_real` for a node.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import os
import signal
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
    workers = workers or os.cpu_count() or 1
    slices = slices or workers
    server_processes = server_processes or max(1, min(8, (os.cpu_count() or 2) // 2))
    proc, url = start_server(loghub_lines(data), lines, windows, server_processes)
    try:
        result = read(url, "logs", windows, workers, slices, page_size, cache_size)
    finally:
        proc.terminate()
        proc.join(10)
    return {
        "lines": result["lines"],
        "lines_per_s": result["lines_per_s"],
        "peak_rss_mb": result["peak_worker_rss_mb"],
        "parent_peak_rss_mb": round(peak_rss_mb(), 1),
        "seconds": result["seconds"],
        "workers": workers,
        "slices": slices,
        "page_size": page_size,
        "server_processes": server_processes,
        "windows": windows,
        "bad_records": result["bad_records"],
        "source": "opensearch-test",
    }


def bulk_load(node, index: str, lines: list[str], n: int, windows: int, shards: int = 2,
              per_request: int = 10_000) -> dict:
    """The GeneratedCorpus's n documents (ids, times and messages as the fake serves them) in a new index."""
    import orjson
    from concurrent.futures import ThreadPoolExecutor

    from tests.servers.opensearch_server import GeneratedCorpus

    client = node.client(timeout=300)
    client.indices.create(index=index, body={
        "settings": {"number_of_shards": shards, "number_of_replicas": 0, "refresh_interval": "-1",
                     "translog.durability": "async"},
        "mappings": {"properties": {"time": {"type": "date", "format": "epoch_millis"},
                                    "log": {"type": "text", "index": False},
                                    "cluster_id": {"type": "keyword"}}},
    })
    corpus = GeneratedCorpus(n, lines, windows)

    def body(start: int) -> bytes:
        parts = []
        for i in range(start, min(n, start + per_request)):
            doc_id, _, doc = corpus.get(i)
            parts.append(b'{"index":{"_id":"%s"}}\n' % doc_id.encode())
            parts.append(orjson.dumps(doc) + b"\n")
        return b"".join(parts)

    def send(start: int) -> int:
        resp = client.bulk(index=index, body=body(start))
        if resp.get("errors"):
            bad = next(i for i in resp["items"] if "error" in next(iter(i.values())))
            raise RuntimeError(f"bulk load failed: {bad}")
        return len(resp["items"])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:  # two requests in flight: the node indexes while the next body is built
        loaded = sum(pool.map(send, range(0, n, per_request)))
    client.indices.put_settings(index=index, body={"refresh_interval": "1s"})
    client.indices.refresh(index=index)
    seconds = time.perf_counter() - t0
    size = client.indices.stats(index=index, metric="store")["_all"]["primaries"]["store"]["size_in_bytes"]
    assert client.count(index=index)["count"] == loaded == n
    return {"load_seconds": round(seconds, 1), "load_docs_per_s": round(n / seconds), "index_mb": round(size / 1e6, 1)}


def read(url: str, index: str, windows: int, workers: int, slices: int, page_size: int, cache_size: int) -> dict:
    """The data stage over `windows` hourly windows of `index` at `url`, timed."""
    from resources.opensearch_source import OpenSearchLogSource

    source = OpenSearchLogSource(hosts=[url], index=index, batch_fields=["cluster_id"], slices=slices,
                                 page_size=page_size)
    bounds = Windows([(w * HOUR, (w + 1) * HOUR) for w in range(windows)])
    with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(time.sleep, [0.2] * workers))  # all workers up before timing
        t0 = time.perf_counter()
        shards = source.shards(bounds)
        result = summarize_windows(shards, bounds, pool=pool, cache_size=max(1, cache_size))
        seconds = time.perf_counter() - t0
    return {"lines": result.lines, "lines_per_s": round(result.lines / seconds, 1),
            "peak_worker_rss_mb": round(result.peak_worker_rss_mb, 1), "seconds": round(seconds, 2),
            "bad_records": result.bad.total, "tiebreaker": shards[0].tiebreaker}


def profile_slice(url: str, index: str, windows: int, slices: int, page_size: int) -> dict:
    """One slice read in this process under cProfile: where its time goes (seconds)."""
    import cProfile
    import pstats

    import opensearchpy

    from ops.mask.data_stage import summarize_shard
    from resources.opensearch_source import OpenSearchLogSource

    took = []
    search = opensearchpy.OpenSearch.search

    def timed_search(self, *a, **kw):
        resp = search(self, *a, **kw)
        took.append(resp.get("took", 0) / 1000)
        return resp

    source = OpenSearchLogSource(hosts=[url], index=index, batch_fields=["cluster_id"], slices=slices,
                                 page_size=page_size)
    bounds = Windows([(w * HOUR, (w + 1) * HOUR) for w in range(windows)])
    shard = source.shards(bounds)[0]
    opensearchpy.OpenSearch.search = timed_search
    prof = cProfile.Profile()
    try:
        t0 = time.perf_counter()
        prof.enable()
        res = summarize_shard(shard, bounds)
        prof.disable()
        total = time.perf_counter() - t0
    finally:
        opensearchpy.OpenSearch.search = search
    stats = pstats.Stats(prof).stats

    def cumulative(name_part: str, file_part: str = "") -> float:
        return sum(v[3] for (f, _, fn), v in stats.items() if fn == name_part and file_part in f)

    searching = cumulative("search", "opensearchpy/client")
    decoding = cumulative("loads", "opensearch_client")       # the orjson serializer's loads
    chunking = cumulative("hits_to_chunk")
    server = sum(took)
    return {
        "slice_lines": sum(res.lines.values()), "seconds": round(total, 2), "pages": len(took),
        "server_took_s": round(server, 2),
        "network_and_http_s": round(searching - server - decoding, 2),
        "json_decode_s": round(decoding, 2),
        "hits_to_chunk_s": round(chunking, 2),
        "masking_and_summaries_s": round(total - searching - chunking, 2),
    }


def clone(node, index: str, copies: int) -> list[str]:
    """`index` and copies-1 clones of it (`_clone` hard-links the segments: no indexing, no extra disk)."""
    client = node.client(timeout=300)
    client.indices.put_settings(index=index, body={"index.blocks.write": True})
    names = [index]
    for k in range(1, copies):
        names.append(f"{index}-copy{k}")
        client.indices.clone(index=index, target=names[-1], body={"settings": {"index.number_of_replicas": 0, "index.blocks.write": None}})
    deadline = time.monotonic() + 300
    while client.cluster.health(index=",".join(names), wait_for_status="green")["status"] != "green":
        if time.monotonic() > deadline:
            raise RuntimeError(f"the clones {names[1:]} are not ready after 300 s")
    return names


def run_real(sizes: list[int], workers: int | None = None, windows: int = 8, data: Path = DEFAULT_DATA,
             slices: int | None = None, page_size: int = 5000, cache_size: int = 100_000,
             version: str | None = None, profile: bool = False) -> list[dict]:
    """Start a node, load the smallest size's documents, read them; reach each larger size (a multiple of
    the smallest) by cloning the index, and read again; then the fake, the same way, at each size."""
    from tests.servers.opensearch_node import DEFAULT_VERSION, run_opensearch_node

    workers = workers or os.cpu_count() or 1
    slices = slices or workers
    sizes = sorted(sizes)
    base = sizes[0]
    if any(n % base for n in sizes):
        raise SystemExit(f"--lines {sizes}: each size must be a multiple of the smallest (the index is cloned)")
    texts = loghub_lines(data)
    outs = []
    # the node's own PIT timings, not the tests' (whose PITs expire within seconds)
    production_pits = {"point_in_time.init.keep_alive": "30s", "search.keep_alive_interval": "1m"}
    with run_opensearch_node(version or DEFAULT_VERSION, settings=production_pits, quick_jit=False) as node:
        load = bulk_load(node, "logs", texts, base, windows)
        indices = clone(node, "logs", sizes[-1] // base) if len(sizes) > 1 else ["logs"]
        for n in sizes:
            out = {"server": "real", "server_version": node.version, "node_start_s": round(node.start_s, 1),
                   "node_install_s": round(node.install_s, 1), **load, "loaded_lines": base,
                   "indices": n // base}
            out.update(read(node.url, ",".join(indices[: n // base]), windows, workers, slices, page_size,
                            cache_size))
            if profile:
                out["profile"] = profile_slice(node.url, ",".join(indices[: n // base]), windows, slices, page_size)
            outs.append(out)
    for n, out in zip(sizes, outs):
        fake = run(n, workers, windows, data, slices, page_size, cache_size=cache_size)
        out.update({"parent_peak_rss_mb": round(peak_rss_mb(), 1), "workers": workers, "slices": slices,
                    "page_size": page_size, "windows": windows,
                    "fake": {k: fake[k] for k in ("lines", "lines_per_s", "peak_rss_mb", "seconds")}})
    return outs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", default="1000000",
                    help="documents; with --server real, several sizes as N1,N2 (multiples of the smallest: one "
                         "node, one load, the index cloned for the larger ones), one JSON line each")
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--slices", type=int, default=None, help="PIT slices (default: workers)")
    ap.add_argument("--page-size", type=int, default=5000)
    ap.add_argument("--server-processes", type=int, default=None, help="fake server processes (default: CPUs/2, max 8)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--server", choices=["fake", "real"], default="fake",
                    help="fake: the protocol-level test server; real: an OpenSearch node (and the fake, to compare)")
    ap.add_argument("--version", default=None, help="the real node's OpenSearch version (default: the tests' 2.x)")
    ap.add_argument("--profile", action="store_true", help="with --server real: where one slice's time goes")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    # a SIGTERM unwinds like an exception, so the node this run started is stopped with it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sizes = [int(x) for x in args.lines.split(",")]
    if args.server == "real":
        outs = run_real(sizes, args.workers, args.windows, args.data, args.slices, args.page_size,
                        version=args.version, profile=args.profile)
    else:
        outs = [run(n, args.workers, args.windows, args.data, args.slices, args.page_size, args.server_processes)
                for n in sizes]
    for out in outs:
        print(json.dumps(out) if args.json else json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
