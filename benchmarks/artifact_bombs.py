"""How long, and how much memory, refusing a hostile model artifact takes.

    python benchmarks/artifact_bombs.py --json
    python benchmarks/artifact_bombs.py --json-member-mb 1000 --vocab-tokens 5000000 --json

Two bombs are built (before timing starts) from a small valid artifact:

- `json_bomb`: its five JSON members each replaced by valid JSON that inflates to
  --json-member-mb MB (whitespace, then the member's real document), a few MB on disk;
- `vocab_bomb`: vocab.json replaced by --vocab-tokens tokens behind a config.json of a
  handful.

Each is read by `read_artifact` in a fresh process; the JSON object printed gives, per bomb,
whether it was refused, the first words of the error, the seconds the read took and the
process's peak RSS (getrusage; the interpreter and torch alone take about 600 MB).
ARTIFACT_CODE=DIR reads with the code in DIR instead (an export of an earlier version: a
before/after comparison on the same bombs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

READ = """
import json, resource, sys, time
from ops.register.artifact import ArtifactError, read_artifact
t0 = time.perf_counter()
try:
    read_artifact(sys.argv[1])
    outcome = "accepted"
except ArtifactError as exc:
    outcome = "refused: " + str(exc).split(": ", 1)[1][:100]
seconds = time.perf_counter() - t0
print(json.dumps({"outcome": outcome, "seconds": round(seconds, 2),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def small_artifact(path: Path) -> None:
    import torch

    from ops.mask.masking import load_rules
    from ops.register.artifact import write_artifact
    from ops.train.model import NuLog, NuLogConfig
    from ops.train.vocab import Vocab

    vocab = Vocab.build([("user <num> logged in", 5), ("disk full", 2)])
    torch.manual_seed(0)
    model = NuLog(NuLogConfig(vocab_size=len(vocab), d_model=32, n_heads=4, d_ff=32, max_len=16)).eval()
    write_artifact(path, model, vocab, load_rules(), model.cfg, {"top_k": 3}, {"batch": "b", "version": 1})


def rebuild(src: Path, dst: Path, streams: dict) -> None:
    with zipfile.ZipFile(src) as z:
        docs = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, data in docs.items():
            if name in streams:
                with z.open(name, "w", force_zip64=True) as out:
                    for chunk in streams[name](data):
                        out.write(chunk)
            else:
                z.writestr(name, data)


def padded(mb: int):
    def chunks(real: bytes):
        block = b" " * (1 << 20)
        for _ in range(mb):
            yield block
        yield real
    return chunks


def big_vocab(n: int):
    def chunks(_real: bytes):
        yield b'{"counts": {}, "itos": ["<pad>", "<cls>", "<mask>", "<unk>"'
        for start in range(0, n, 100_000):
            yield b"".join(b', "t%d"' % i for i in range(start, min(n, start + 100_000)))
        yield b"]}"
    return chunks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json-member-mb", type=int, default=200, help="what each JSON member inflates to (MB)")
    ap.add_argument("--vocab-tokens", type=int, default=5_000_000)
    ap.add_argument("--json", action="store_true", help="print one JSON object (the default output too)")
    args = ap.parse_args()
    out = {"json_member_mb": args.json_member_mb, "vocab_tokens": args.vocab_tokens}
    with tempfile.TemporaryDirectory() as tmp:
        good = Path(tmp) / "good.zip"
        small_artifact(good)
        bombs = {
            "json_bomb": {m: padded(args.json_member_mb) for m in
                          ("vocab.json", "masking_rules.json", "config.json", "metrics.json", "meta.json")},
            "vocab_bomb": {"vocab.json": big_vocab(args.vocab_tokens)},
        }
        for name, streams in bombs.items():
            path = Path(tmp) / f"{name}.zip"
            rebuild(good, path, streams)
            run = subprocess.run([sys.executable, "-c", READ, str(path)], cwd=os.environ.get("ARTIFACT_CODE", ROOT),
                                 capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.environ.get("ARTIFACT_CODE", str(ROOT))})
            if run.returncode != 0:
                raise SystemExit(f"{name}: the reader failed: {run.stderr.strip().splitlines()[-1:]}")
            out[name] = {"zip_mb": round(path.stat().st_size / 1e6, 1), **json.loads(run.stdout)}
    print(json.dumps(out))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
