"""A real single-node OpenSearch for tests, installed from Maven Central when missing.

    from tests.servers.opensearch_node import run_opensearch_node

    with run_opensearch_node("2.19.6") as node:
        node.url             # http://127.0.0.1:PORT (loopback only, a free port)
        node.client()        # an opensearch-py client
        node.stop()          # stop it early (the node-stopped-mid-read test)

The distribution is OpenSearch's minimal one, `org.opensearch.distribution.integ-test-zip:
opensearch:<version>` (a zip: the server, transport-netty4, no security plugin and no bundled
JDK). `mvn dependency:copy` fetches it once into a cache folder (`~/.cache/logloop/opensearch`,
or `/var/cache/logloop/opensearch` when we are root, since the node then runs as `nobody`,
who cannot enter /root; OPENSEARCH_DIST_CACHE overrides), where it is unzipped and reused.
Parallel test processes install once (a file lock).

Each node gets a temporary folder with its own config (the distribution's, heap lines
dropped and log paths made absolute), data, logs and tmp, and starts with single-node
discovery, a 512 MB heap, HTTP and transport on free loopback ports, the disk watermarks
off (a shared disk must not turn indices read-only), and PITs that can expire within seconds:
a node opens each PIT with `point_in_time.init.keep_alive` (30 s by default; 3 s here) and a
search only ever lengthens a keep-alive, so a shorter one takes effect only with this set low;
`search.keep_alive_interval=1s` reaps an expired one within a second (the PIT-expiry tests).
OpenSearch refuses to run as root: as root it runs as `nobody`. The node runs in a process
group of its own and is stopped with everything below it; its folder is then deleted.

Java: 2.x runs on the default JDK (17); 3.x needs Java 21 or newer, taken from
/usr/lib/jvm (the newest there). Any failure (no Maven, nothing served, no JDK, a start that
does not answer within `start_timeout_s`) raises OpenSearchUnavailable with the reason and
the node's log: tests fail on it, never skip.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import orjson
import pytest

from tests.servers.processes import apt_install, free_port, stop_process_group

DEFAULT_VERSION = "2.19.6"   # the 2.x line Opni deployments run; the suite's node
NEWER_VERSION = "3.3.2"      # the first line with _shard_doc; its tests are marked opensearch3
RUN_AS = "nobody"            # the OS user the node runs as, when we are root
HEAP = "512m"
# A test node lives for minutes: the JIT's quick tier only. Optimising hot code (C2) would cost more
# CPU than it saves here: the node tests took 120 s of CPU with it, 57 s without (busy CPU, 2 cores).
JIT = "-XX:TieredStopAtLevel=1"
GROUP = "org.opensearch.distribution.integ-test-zip"


class OpenSearchUnavailable(RuntimeError):
    """OpenSearch could not be installed or started."""


def cache_dir() -> Path:
    if os.environ.get("OPENSEARCH_DIST_CACHE"):
        return Path(os.environ["OPENSEARCH_DIST_CACHE"])
    if os.geteuid() == 0:
        return Path("/var/cache/logloop/opensearch")
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "logloop" / "opensearch"


def _major(version: str) -> int:
    return int(version.split(".")[0])


def java_home(version: str) -> Path:
    """A JDK that runs this OpenSearch: the default one (Java 17) for 2.x; for 3.x the newest
    JDK of Java 21 or newer under /usr/lib/jvm."""
    found = []
    for release in Path("/usr/lib/jvm").glob("*/release"):
        home = release.parent
        if home.is_symlink() or not (home / "bin" / "java").exists():
            continue
        m = re.search(r'JAVA_VERSION="(\d+)', release.read_text(errors="replace"))
        if m:
            found.append((int(m.group(1)), home))
    want = (21, 99) if _major(version) >= 3 else (11, 21)
    fits = sorted(f for f in found if want[0] <= f[0] <= want[1])
    if not fits:
        raise OpenSearchUnavailable(
            f"OpenSearch {version} needs a JDK of Java {want[0]} to {want[1]} under /usr/lib/jvm; found "
            f"{sorted(j for j, _ in found) or 'none'}")
    return fits[-1][1] if _major(version) >= 3 else fits[0][1]


def _mvn() -> str:
    return apt_install("maven", lambda: shutil.which("mvn"), OpenSearchUnavailable, "the OpenSearch tests")


def _unzip(archive: Path, dest: Path) -> None:
    """Unzip keeping the files' modes (bin/opensearch must stay executable)."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            path = Path(zf.extract(info, dest))
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                path.chmod(mode | 0o444 | (0o111 if path.is_dir() else 0))


def ensure_installed(version: str = DEFAULT_VERSION, timeout_s: float = 900) -> Path:
    """The unzipped distribution's folder, fetched with Maven and unzipped into the cache first when missing."""
    root = cache_dir()
    home = root / f"opensearch-{version}"
    if (home / "bin" / "opensearch").is_file():
        return home
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (home / "bin" / "opensearch").is_file():
            return home
        work = Path(tempfile.mkdtemp(prefix=f"opensearch-{version}-", dir=root))
        try:
            cmd = [_mvn(), "-B", "-q", "dependency:copy", f"-Dartifact={GROUP}:opensearch:{version}:zip",
                   f"-DoutputDirectory={work}"]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=work)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise OpenSearchUnavailable(f"fetching OpenSearch {version} with Maven failed: {exc}") from exc
            archive = work / f"opensearch-{version}.zip"
            if done.returncode != 0 or not archive.is_file():
                raise OpenSearchUnavailable(
                    f"Maven could not fetch {GROUP}:opensearch:{version}:zip (is Maven Central reachable?):\n"
                    f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
            _unzip(archive, work / "unzipped")
            (work / "unzipped" / f"opensearch-{version}").rename(home)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return home


@dataclass
class OpenSearchNode:
    version: str
    url: str
    root: Path
    proc: Optional[subprocess.Popen] = None
    log_file: object = None
    start_s: float = 0.0          # from launch to answering HTTP
    install_s: float = 0.0        # fetching and unzipping (0 when cached)
    _stopped: bool = field(default=False, repr=False)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def client(self, **kw):
        from opensearchpy import OpenSearch

        kw.setdefault("timeout", 60)
        return OpenSearch(hosts=[self.url], **kw)

    def request(self, method: str, path: str, body=None, timeout: float = 30):
        """One HTTP request without opensearch-py (the start-up probe); the decoded JSON answer."""
        data = orjson.dumps(body) if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return orjson.loads(resp.read())

    def log(self) -> str:
        parts = []
        for name in ("stdout.log", "logs/logloop-test.log"):
            with contextlib.suppress(OSError):
                parts.append((self.root / name).read_text(errors="replace"))
        return "\n".join(parts)

    def stop(self) -> None:
        if self.proc is not None and not self._stopped:
            self._stopped = True
            stop_process_group(self.proc, self.log_file)


def _config(dist: Path, root: Path) -> Path:
    conf = root / "config"
    shutil.copytree(dist / "config", conf)
    options = (conf / "jvm.options").read_text()
    options = re.sub(r"(?m)^-Xm[sx]\S+$", "", options)          # the heap comes from OPENSEARCH_JAVA_OPTS
    options = options.replace("logs/gc.log", str(root / "logs" / "gc.log"))
    options = options.replace("logs/hs_err", str(root / "logs" / "hs_err"))
    options = options.replace("HeapDumpPath=data", f"HeapDumpPath={root / 'data'}")
    (conf / "jvm.options").write_text(options)
    return conf


@contextlib.contextmanager
def run_opensearch_node(version: str = DEFAULT_VERSION, start_timeout_s: float = 240,
                        settings: Optional[dict] = None, quick_jit: bool = True) -> Iterator[OpenSearchNode]:
    """Install if needed, start a private single node, yield it; stop it and delete its folder on exit.
    quick_jit=False gives the JVM all its JIT tiers, as a long-lived node has (benchmarks)."""
    t0 = time.monotonic()
    dist = ensure_installed(version)
    install_s = time.monotonic() - t0
    jdk = java_home(version)
    root = Path(tempfile.mkdtemp(prefix=f"logloop-os-{version}-"))
    node: Optional[OpenSearchNode] = None
    try:
        conf = _config(dist, root)
        for d in ("data", "logs", "tmp"):
            (root / d).mkdir()
        as_root = os.geteuid() == 0
        if as_root:
            uid, gid = pwd.getpwnam(RUN_AS).pw_uid, pwd.getpwnam(RUN_AS).pw_gid
            for dirpath, _, files in os.walk(root):
                os.chown(dirpath, uid, gid)
                for f in files:
                    os.chown(os.path.join(dirpath, f), uid, gid)
        http_port, transport_port = free_port(), free_port()
        opts = {
            "cluster.name": "logloop-test", "node.name": "node-1", "discovery.type": "single-node",
            "network.host": "127.0.0.1", "http.port": http_port, "transport.port": transport_port,
            "path.data": root / "data", "path.logs": root / "logs",
            "cluster.routing.allocation.disk.threshold_enabled": "false",
            "search.keep_alive_interval": "1s", "point_in_time.init.keep_alive": "3s",
            **(settings or {}),
        }
        java_opts = f"-Xms{HEAP} -Xmx{HEAP}" + (f" {JIT}" if quick_jit else "")
        env = dict(os.environ, OPENSEARCH_JAVA_HOME=str(jdk), JAVA_HOME=str(jdk), OPENSEARCH_PATH_CONF=str(conf),
                   OPENSEARCH_TMPDIR=str(root / "tmp"), OPENSEARCH_JAVA_OPTS=java_opts)
        cmd = [str(dist / "bin" / "opensearch"), *[f"-E{k}={v}" for k, v in opts.items()]]
        if as_root:
            cmd = ["runuser", "-u", RUN_AS, "--", *cmd]
        log_file = open(root / "stdout.log", "wb")
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=root,
                                start_new_session=True)
        node = OpenSearchNode(version, f"http://127.0.0.1:{http_port}", root, proc, log_file, install_s=install_s)
        while True:
            try:
                info = node.request("GET", "/", timeout=5)
                if info.get("version", {}).get("number") == version:
                    break
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if proc.poll() is not None:
                raise OpenSearchUnavailable(f"OpenSearch {version} exited with {proc.returncode} while starting:\n"
                                            f"{node.log()[-4000:]}")
            if time.monotonic() - started > start_timeout_s:
                raise OpenSearchUnavailable(f"OpenSearch {version} did not answer on {node.url} within "
                                            f"{start_timeout_s:.0f} s:\n{node.log()[-4000:]}")
            time.sleep(0.25)
        node.start_s = time.monotonic() - started
        yield node
    finally:
        if node is not None:
            node.stop()
        shutil.rmtree(root, ignore_errors=True)


class NodePool:
    """The session's nodes, one per version, started when first asked for and stopped at the end."""

    def __init__(self):
        self.stack = contextlib.ExitStack()
        self.nodes: dict[str, OpenSearchNode] = {}

    def get(self, version: str = DEFAULT_VERSION) -> OpenSearchNode:
        if version not in self.nodes:
            self.nodes[version] = self.stack.enter_context(run_opensearch_node(version))
        return self.nodes[version]

    def close(self) -> None:
        self.stack.close()


@pytest.fixture(scope="session")
def opensearch_nodes() -> Iterator[NodePool]:
    """The session's OpenSearch nodes: `opensearch_nodes.get(version)` starts one per version."""
    pool = NodePool()
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="session")
def opensearch_node(opensearch_nodes) -> OpenSearchNode:
    """The session's node of the suite's version (DEFAULT_VERSION)."""
    return opensearch_nodes.get(DEFAULT_VERSION)


if __name__ == "__main__":  # a manual check: install, start, show the version and the times, stop
    import sys

    for v in sys.argv[1:] or [DEFAULT_VERSION]:
        with run_opensearch_node(v) as n:
            print(f"OpenSearch {n.request('GET', '/')['version']['number']} at {n.url}: "
                  f"install {n.install_s:.1f} s, start {n.start_s:.1f} s")
