"""`logloop push`, `logloop samples count` and `logloop serve-ingest`: CML's front door.

    logloop push --batch B [-f FILE | -] [--key K] [--format text|json] [--validation-share 0.2] [--seed N] [--json]
    logloop samples count --batch B [--since T] [--json]
    logloop serve-ingest [--host 127.0.0.1] [--port 8765]

Samples go to the configured store's database (resources/samples.py). `push` exits 0 when
every line was registered, 1 when some lines were bad (the good ones are registered; the bad
ones are counted by reason), 2 when the store failed (the message says how many samples were
registered before it; with --key, the same command again registers only the rest).
"""

from __future__ import annotations

import json
import sys
import time

from orchestration.cli.common import batch_arg, CliError, human_time, open_store, print_table

FORMATS = ("text", "json")


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CliError(f"--validation-share {text!r} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise CliError(f"--validation-share {text!r} must be at least 0 and below 1")
    return value


def default_share() -> str:
    from orchestration.config import settings

    return str(settings().validation_share)


def _message_field() -> str:
    from orchestration.config import settings

    return settings().message_field


def add_parser(sub) -> None:
    p = sub.add_parser(
        "push", help="register log lines as samples of a batch (CML's sample registration)",
        description="Read log lines (plain text, one message per line, or JSON Lines with the message in "
                    "--message-field) from FILE or standard input and register them as samples of batch B in the "
                    "store. Each sample gets a unique nanosecond timestamp (its receive time, +1 ns per sample) and a "
                    "train/validation flag drawn at registration. Bad lines (blank, not UTF-8, over 16,384 bytes, bad "
                    "JSON) are counted by reason and not registered. The pipeline trains on pushed samples only with "
                    "LOGLOOP_LOG_SOURCE=samples. Exit status: 0 all registered, 1 some lines bad "
                    "(or an invalid batch name), 2 the store failed. --json prints {\"registered\": N, \"bad\": M, ...}.")
    p.add_argument("--batch", type=batch_arg, required=True, help="the batch the samples belong to")
    p.add_argument("-f", "--file", dest="file", help="read this file (default: standard input)")
    p.add_argument("source", nargs="?", metavar="-", help="'-' reads standard input (the default)")
    p.add_argument("--format", choices=FORMATS, default="text", help="text (default) or json (JSON Lines)")
    p.add_argument("--message-field", default=None,
                   help="JSON Lines: the message's field, dotted for a nested one (default: LOGLOOP_MESSAGE_FIELD or log)")
    p.add_argument("--validation-share", default=None,
                   help="share of samples flagged validation (default: LOGLOOP_VALIDATION_SHARE or 0.2, CML's 80/20)")
    p.add_argument("--seed", type=int, help="seed of the train/validation draw (repeatable pushes, tests)")
    p.add_argument("--chunk", type=int, default=20_000, help="samples per store write (default 20,000)")
    p.add_argument("--key", help="a key of this push (1 to 200 printable characters): run again with the same key, "
                                 "input and --chunk after a failure, the push registers only the chunks not yet "
                                 "registered")
    p.add_argument("--progress", type=float, default=10.0, metavar="SECONDS",
                   help="report progress on standard error every SECONDS (default 10; 0: never)")
    p.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
    p.set_defaults(func=cmd_push)

    samples = sub.add_parser("samples", help="pushed samples").add_subparsers(dest="samples_command", required=True)
    p = samples.add_parser("count", help="count the stored samples of a batch",
                           description="Count the samples stored for batch B (since T). With --json: "
                                       "{\"batch\": B, \"count\": N}.")
    p.add_argument("--batch", type=batch_arg, required=True)
    p.add_argument("--since", help="only samples received after this: a duration back from now (90m, 24h, 7d) "
                                   "or a UTC time (2026-11-23T07:00Z)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_samples_count)

    p = samples.add_parser("results", help="inference results recorded by 'logloop score --record' and anomaly_scores",
                           description="The batch's recorded inference results, oldest first: time, score, verdict, "
                                       "lines (1 per line from 'score --record'; a window's lines of the form from "
                                       "anomaly_scores), model version, masked form. With --json: a list of {ts_ns, "
                                       "score, anomaly, masked, lines, model_version}.")
    p.add_argument("--batch", type=batch_arg, required=True)
    p.add_argument("--since", help="only results after this: a duration back from now (90m, 24h) or a UTC time")
    p.add_argument("--limit", type=int, default=1000, help="at most this many (default 1,000)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_samples_results)

    p = sub.add_parser("serve-ingest", help="accept pushed samples over HTTP on loopback",
                       description="Serve POST /push?batch=B[&format=json][&seed=N][&key=K] (the body: log lines; "
                                   "an Idempotency-Key header as --key) and GET /count?batch=B on a loopback address "
                                   "until interrupted. A body is registered only once it has arrived whole; limits "
                                   "(connections, timeouts, body size) are the ingest: settings of config/loop.yaml.")
    p.add_argument("--host", default="127.0.0.1", help="a loopback address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765)
    p.set_defaults(func=cmd_serve_ingest)


def _table_for_store():
    from resources.samples import samples_for_store

    return samples_for_store(open_store())


def _multiline() -> dict:
    """The loop settings' multiline rules: a stack trace pushed at once is one sample."""
    from orchestration.loop_settings import load_loop_settings

    return load_loop_settings().multiline.rules()


def _check_batch(batch: str) -> None:
    from ops.naming import InvalidName, validate_batch_name

    try:
        validate_batch_name(batch)
    except InvalidName as exc:
        raise CliError(str(exc)) from None


def _so_far(stats, batch: str, key) -> str:
    done = f"{stats.registered:,} sample(s) of batch {batch!r} were registered before it"
    if stats.already:
        done += f" ({stats.already:,} more were there from an earlier push with this key)"
    if key:
        return done + f"; the same command again (--key {key}) registers only the rest"
    return done + "; a rerun would register them again: push with --key K to make a rerun register only the rest"
def samples_source_note() -> str | None:
    """Pushed samples feed training only when they are the log source: a note saying so when they are not."""
    from orchestration.resources import build_resources
    from resources.samples_source import SamplesLogSource

    source = build_resources()["log_source"]
    if isinstance(source, SamplesLogSource):
        return None
    return (f"note: the pipeline reads pushed samples only with LOGLOOP_LOG_SOURCE=samples; it now reads "
            f"{source.describe()} (set the variable where the code location runs)")


def cmd_push(args) -> int:
    from ops.fetch.push import PushStats
    from resources.samples import push
    from resources.store import StoreError

    stats = PushStats()

    def run() -> int:
        _check_batch(args.batch)
        if args.file and args.source:
            raise CliError("give the input once: -f FILE or '-'")
        if args.source not in (None, "-"):
            raise CliError(f"unexpected argument {args.source!r}: read a file with -f FILE")
        if args.chunk <= 0:
            raise CliError("--chunk must be positive")
        if args.progress < 0:
            raise CliError("--progress must be 0 or more seconds")
        share = _share(args.validation_share or default_share())
        field = args.message_field or _message_field()
        table = _table_for_store()
        if args.file:
            try:
                stream = open(args.file, "rb")
            except OSError as e:
                raise CliError(f"cannot read {args.file}: {e.strerror or e}") from None
            name = args.file
        else:
            if sys.stdin is None:
                raise CliError("cannot read standard input: it is closed")
            stream, name = sys.stdin.buffer, "stdin"
        last_report = [time.monotonic()]

        def progress(s) -> None:
            now = time.monotonic()
            if args.progress and now - last_report[0] >= args.progress:
                last_report[0] = now
                print(f"{s.lines:,} line(s) read: {s.registered:,} registered"
                      + (f", {s.already:,} already registered" if s.already else "")
                      + (f", {s.bad.total:,} bad" if s.bad.total else "") + f" ({s.seconds:.0f} s)",
                      file=sys.stderr, flush=True)

        try:
            push(args.batch, stream, table, fmt=args.format, message_field=field, validation_share=share,
                 seed=args.seed, chunk=args.chunk, source=name, multiline=_multiline(), key=args.key,
                 on_chunk=progress, stats=stats)
        finally:
            if args.file:
                stream.close()
        out = stats.to_dict(args.batch)
        if args.json:
            print(json.dumps(out))
        else:
            print(f"registered {stats.registered:,} sample(s) of batch {args.batch!r} "
                  f"({out['train']:,} train, {out['validation']:,} validation) in {stats.seconds:.2f} s"
                  + (f"; {stats.already:,} were already registered by an earlier push with this key" if stats.already else "")
                  + (f"; {stats.sanitised:,} with control characters replaced" if stats.sanitised else ""))
        if stats.lines == 0:
            print(f"warning: {name} held no lines; nothing registered", file=sys.stderr)
        elif stats.registered:
            note = samples_source_note()
            if note:
                print(note, file=sys.stderr)
        if stats.bad.total:
            reasons = ", ".join(f"{r} {n:,}" for r, n in sorted(stats.bad.counts.items()))
            for example in stats.bad.examples[:5]:
                print(f"  {example}", file=sys.stderr)
            print(f"error: {stats.bad.total:,} bad line(s) not registered ({reasons})", file=sys.stderr)
            return 1
        return 0

    try:
        return run()
    except (CliError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except StoreError as e:
        print(f"error: {e}; {_so_far(stats, args.batch, args.key)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; {_so_far(stats, args.batch, args.key)}", file=sys.stderr)
        return 130


def cmd_samples_count(args) -> int:
    from orchestration.cli.anomalies import parse_since

    try:
        _check_batch(args.batch)
        since_ns = parse_since(args.since, int(time.time() * 1000)) * 1_000_000 if args.since else None
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    n = _table_for_store().count(args.batch, since_ns=since_ns)
    out = {"batch": args.batch, "count": n}
    if since_ns is not None:
        out["since_ns"] = since_ns
    if args.json:
        print(json.dumps(out))
    else:
        print_table([["BATCH", "SAMPLES"] + (["SINCE"] if args.since else []),
                [args.batch, f"{n:,}"] + ([args.since] if args.since else [])], nowrap=("SAMPLES",), keep=("BATCH",))
    return 0


def record_scores(batch: str, scored, model_version: int, threshold: float | None = None) -> None:
    """`logloop score --record`: one row per scored line in the store, with its verdict's reason."""
    _table_for_store().record_results(batch, [(s.score, s.anomaly, s.masked, 1, s.reason) for s in scored],
                                      model_version, threshold=threshold)


def cmd_samples_results(args) -> int:
    from orchestration.cli.anomalies import parse_since

    try:
        _check_batch(args.batch)
        if args.limit <= 0:
            raise CliError("--limit must be positive")
        since_ns = parse_since(args.since, int(time.time() * 1000)) * 1_000_000 if args.since else None
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    rows = _table_for_store().results(args.batch, since_ns=since_ns, limit=args.limit)
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print(f"no inference results recorded for batch {args.batch!r}" + (f" since {args.since}" if args.since else "")
              + " (logloop score --record, or anomaly_scores for the batches in record_results_batches)")
        return 0
    import datetime as dt

    def when(ns):
        return dt.datetime.fromtimestamp(ns / 1e9, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%fZ")

    from ops.validate.verdict import describe

    def why(r) -> str:  # rows recorded before verdicts said why have no reason
        if not r.get("reason"):
            return "-"
        return describe(r["reason"], r["anomaly"], r["threshold"]) if r.get("threshold") is not None else r["reason"]

    print_table([["TIME", "WINDOW", "SCORE", "VERDICT", "REASON", "LINES", "MODEL", "MASKED"]]
           + [[when(r["ts_ns"]), human_time(r.get("window_start_ms")), f"{r['score']:.3f}",
               "ANOMALY" if r["anomaly"] else "normal", why(r), f"{r['lines']:,}", f"v{r['model_version']}", r["masked"]]
              for r in rows],
           nowrap=("TIME", "WINDOW", "SCORE", "VERDICT", "REASON", "LINES", "MODEL"))
    return 0


# ---- HTTP ----------------------------------------------------------------------------------------


def make_server(host: str, port: int, table=None, limits=None):
    """An IngestServer (orchestration/cli/ingest_http.py) for POST /push and GET /count, bound, not started."""
    import ipaddress

    from orchestration.cli.ingest_http import IngestServer, ingest_app
    from orchestration.loop_settings import loop_settings

    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise CliError(f"--host {host!r} is not a loopback address: serve-ingest listens on this machine only")
    table = table or _table_for_store()
    limits = limits or loop_settings().ingest
    app = ingest_app(table, validation_share=_share(default_share()),
                     message_field=_message_field(), multiline=_multiline(), limits=limits)
    return IngestServer(app, host, port, limits)


def cmd_serve_ingest(args) -> int:
    try:
        server = make_server(args.host, args.port)
    except (CliError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    host, port = server.server_address[:2]
    print(f"serving POST http://{host}:{port}/push?batch=B and GET /count?batch=B (Ctrl-C stops)", file=sys.stderr)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.sock.close()
    return 0
