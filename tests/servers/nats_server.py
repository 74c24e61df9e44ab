"""A private, real NATS server with JetStream for tests (and anything else that needs one briefly).

    from tests.servers.nats_server import nats_server

    with nats_server() as ns:              # or nats_server(user="u", password="p") / nats_server(token="t")
        nc = await nats.connect(**ns.connect_kwargs())   # servers=[ns.url] plus the credentials
        ...
        ns.kill()                          # SIGKILL, as a crash would
        ns.restart()                       # the same port and JetStream store: streams survive

Debian's `nats-server` package provides the server; when no `nats-server` is on PATH (nor in
/usr/sbin or /usr/bin, which a non-root PATH may lack), it is installed (`apt-get update`,
then `apt-get install -y nats-server`, which needs root) under a file lock, so parallel test
processes install once. The server runs with JetStream on (`-js`), listening only on
127.0.0.1 on a free port (clients only: no HTTP monitor, no cluster port), with its store
and log in a temporary folder, in its own process group, set to be SIGKILLed if the process
that started it dies (Linux PR_SET_PDEATHSIG), so it never outlives the tests. (That signal
follows the starting *thread*: start it from a thread that lives as long as the server.)
Optional authentication: user and password (`--user/--pass`) or a token (`--auth`).
The context manager stops it (SIGTERM, then SIGKILL) and deletes the folder on exit.

Any failure (no package and no way to install it, the server not starting or not getting
ready) raises NatsUnavailable with the reason and the server's log: tests must fail on it,
never skip.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

from tests.servers.processes import apt_install, free_port

READY_LINE = "Server is ready"  # what nats-server logs once it accepts clients
_SBIN_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin")  # Debian puts it in /usr/sbin


class NatsUnavailable(RuntimeError):
    """nats-server could not be installed or started; the message says why."""


def _find_binary() -> Optional[str]:
    found = shutil.which("nats-server")
    if found:
        return found
    for d in _SBIN_DIRS:
        path = Path(d) / "nats-server"
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def ensure_installed(timeout_s: float = 900) -> str:
    """The nats-server executable, installing Debian's nats-server first when it is missing."""
    return apt_install("nats-server", _find_binary, NatsUnavailable, "the NATS tests", timeout_s)


_PR_SET_PDEATHSIG = 1
try:
    _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
except OSError:  # not glibc/Linux: the server then relies on stop() alone
    _LIBC = None


def _die_with_parent(parent_pid: int):
    """A preexec_fn: the child gets SIGKILL when its parent dies (Linux PR_SET_PDEATHSIG).

    Its own session keeps terminal signals (Ctrl-C) away from the server, but would let it outlive
    a test process that is killed before its `finally` runs; this ties the two together again.
    """
    def preexec() -> None:
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)
    return preexec


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class NatsServer:
    """`nats-server -js` on 127.0.0.1:`port` (a free one by default), store and log under `root`.

    `root` defaults to a new temporary folder; deleting it is the caller's (nats_server() does).
    Give `user` and `password`, or `token`, to make clients authenticate.
    """

    host = "127.0.0.1"

    def __init__(self, root: Optional[os.PathLike | str] = None, *, port: Optional[int] = None,
                 user: Optional[str] = None, password: Optional[str] = None, token: Optional[str] = None,
                 start_timeout_s: float = 15.0):
        if (user is None) != (password is None):
            raise ValueError("give both user and password, or neither")
        if token is not None and user is not None:
            raise ValueError("give user/password or token, not both")
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="logloop-nats-"))
        self._fixed_port = port is not None  # a port we were given (or used before) is not re-chosen
        self.port = port or free_port()
        self.user, self.password, self.token = user, password, token
        self.start_timeout_s = start_timeout_s
        self.store_dir = str(self.root / "store")          # -sd; JetStream keeps its files in store/jetstream
        self.log_path = str(self.root / "nats-server.log")  # -l; appended to across restarts
        self._out_path = self.root / "nats-server.out"      # stdout/stderr (flag errors, panics)
        self.proc: Optional[subprocess.Popen] = None
        self._out = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def connect_kwargs(self) -> dict:
        """Keyword arguments for nats-py's `nats.connect`: servers=[url] and the credentials, if any."""
        kwargs: dict = {"servers": [self.url]}
        if self.user is not None:
            kwargs.update(user=self.user, password=self.password)
        if self.token is not None:
            kwargs["token"] = self.token
        return kwargs

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _command(self, exe: str) -> list[str]:
        cmd = [exe, "-js", "-a", self.host, "-p", str(self.port), "-sd", self.store_dir, "-l", self.log_path]
        if self.user is not None:
            cmd += ["--user", self.user, "--pass", self.password]
        if self.token is not None:
            cmd += ["--auth", self.token]
        return cmd

    def log(self) -> str:
        """The server's log (all starts so far), and anything it wrote to stdout/stderr."""
        text = ""
        for path in (Path(self.log_path), self._out_path):
            try:
                text += path.read_text(errors="replace")
            except OSError:
                pass
        return text

    def _log_size(self) -> int:
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def _launch(self, exe: str) -> None:
        """Start the process and wait until it accepts clients; NatsUnavailable if it does not."""
        self.root.mkdir(parents=True, exist_ok=True)
        offset = self._log_size()  # only this start's "Server is ready" counts
        self._out = open(self._out_path, "ab")
        self.proc = subprocess.Popen(self._command(exe), stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT, cwd=str(self.root), start_new_session=True,
                                     preexec_fn=_die_with_parent(os.getpid()))
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self._reap()
                raise NatsUnavailable(f"nats-server on port {self.port} exited with {code} while starting:\n"
                                      f"{self.log()[-3000:]}")
            if _port_open(self.host, self.port):
                try:
                    with open(self.log_path, "rb") as f:
                        f.seek(offset)
                        ready = READY_LINE in f.read().decode(errors="replace")
                except OSError:
                    ready = False
                if ready:
                    return
            if time.monotonic() > deadline:
                self.kill()
                raise NatsUnavailable(f"nats-server on port {self.port} not ready in {self.start_timeout_s:g} s:\n"
                                      f"{self.log()[-3000:]}")
            time.sleep(0.05)

    def start(self) -> "NatsServer":
        """Start the server (nothing if it runs already); returns self."""
        if self.running:
            return self
        exe = ensure_installed()
        attempts = 1 if self._fixed_port else 3  # a chosen free port may be taken before the server binds it
        for attempt in range(attempts):
            try:
                self._launch(exe)
                break
            except NatsUnavailable:
                if attempt + 1 == attempts or "address already in use" not in self.log()[-2000:]:
                    raise
                self.port = free_port()
        self._fixed_port = True  # restart() must come back on the same port
        return self

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # the process group start_new_session made
        except ProcessLookupError:
            pass

    def _reap(self) -> None:
        self.proc = None
        if self._out is not None:
            self._out.close()
            self._out = None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop gracefully (SIGTERM; JetStream flushes its store), SIGKILL after `timeout_s`."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(timeout=30)
        self._reap()

    def kill(self) -> None:
        """SIGKILL at once, as a crash would (no flush, no goodbye to clients)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal_group(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._reap()

    def restart(self) -> "NatsServer":
        """Start again on the same port with the same JetStream store (stopping it first if it runs)."""
        self.stop()
        return self.start()

    def __repr__(self) -> str:
        return f"NatsServer(url={self.url!r}, store_dir={self.store_dir!r}, running={self.running})"


@contextlib.contextmanager
def nats_server(user: Optional[str] = None, password: Optional[str] = None, token: Optional[str] = None,
                start_timeout_s: float = 15.0) -> Iterator[NatsServer]:
    """Install if needed, start a private server in a fresh temporary folder, yield it; stop and delete on exit."""
    server = NatsServer(user=user, password=password, token=token, start_timeout_s=start_timeout_s)
    try:
        server.start()
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(server.root, ignore_errors=True)


if __name__ == "__main__":  # a manual check: start, show the URL, stop
    t0 = time.monotonic()
    with nats_server() as ns:
        print(f"up in {time.monotonic() - t0:.2f} s:", ns.url, "store:", ns.store_dir)
