"""Helpers for the server processes tests start: stopping them, and their client environments."""

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import tempfile
from pathlib import Path


def proc_stat(pid) -> list[bytes]:
    """The fields of /proc/<pid>/stat after the process name (state, ppid, ...); OSError once it is gone."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rsplit(b")", 1)[1].split()  # the name in (...) may hold spaces


def descendants(pid: int) -> list[int]:
    """Every process below `pid` now (from /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(proc_stat(entry)[1])
        except OSError:  # gone meanwhile
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def stop_process_group(proc: subprocess.Popen, log) -> bool:
    """SIGTERM the process's group (it and its children), SIGKILL after 30 s; close its log. True when
    the process stopped on SIGTERM, False when it took SIGKILL.

    Descendants that left the group (dagster-daemon and `dagster dev` start their code servers in
    sessions of their own) are found first and killed after it, so none outlives the test."""
    strays = descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
        stopped = True
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        stopped = False
    for pid in strays:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    log.close()
    return stopped


@contextlib.contextmanager
def environment(env: dict, cleared=()):
    """os.environ with `env` set and the `cleared` variables unset, restored afterwards."""
    saved = {k: os.environ.get(k) for k in (*env, *cleared)}
    for k in cleared:
        os.environ.pop(k, None)
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def free_port() -> int:
    """A TCP port free on loopback now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def apt_install(package: str, find, unavailable: type[Exception], what: str, timeout_s: float = 900):
    """What `find()` returns, installing Debian's `package` (or several, space-separated) first
    when it returns nothing.

    Parallel test processes (pytest-xdist workers) install one at a time: one file lock for every
    package, since two apt-get runs at once would fight over dpkg's own lock. Without root, or when
    apt-get fails, `unavailable` is raised with apt's own words. `what` names the tests that need it.
    Recommended packages are left out: name what a test needs."""
    found = find()
    if found:
        return found
    if os.geteuid() != 0:
        raise unavailable(f"{package} is not installed and we are not root to install it: "
                          f"run `apt-get install -y {package}`")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    lock_path = Path(tempfile.gettempdir()) / "logloop-apt-install.lock"
    lock_path.touch(exist_ok=True)
    with open(lock_path) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = find()
        if found:
            return found
        # apt-get waits for dpkg's lock when something else on the machine holds it
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300",
                   *package.split()]
        try:
            update = subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, env=env,
                                    timeout=timeout_s)
            done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise unavailable(f"could not install Debian's {package}: {exc}") from exc
        found = find()
        if done.returncode != 0 or not found:
            raise unavailable(
                f"could not install Debian's {package} (needed for {what}; is the package mirror reachable?):\n"
                f"apt-get update: {update.stderr[-1500:]}\napt-get install: {done.stdout[-1500:]}{done.stderr[-2000:]}")
        return found
