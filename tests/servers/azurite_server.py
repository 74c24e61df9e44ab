"""Azurite's blob service (Microsoft's Azure Storage emulator, the `azurite` npm package) on loopback.

    from tests.servers.azurite_server import AzuriteServer, ensure_adlfs

    ensure_adlfs()                          # adlfs importable (pip-installs the pinned version if not)
    with AzuriteServer() as az:             # azurite-blob on 127.0.0.1, a free port, a temp folder
        az.service_client().create_container("artifacts")
        with az.environment():              # AZURE_STORAGE_CONNECTION_STRING in os.environ
            ...                             # adlfs code under test (az://artifacts/prefix)

Azurite is installed with npm (`npm install --prefix CACHE azurite@VERSION`) when it is not
already in CACHE: `$LOGLOOP_AZURITE_DIR`, else `~/.cache/logloop-azurite`, outside the
repository so nothing is committed and later runs reuse it. Only the blob service runs
(`azurite-blob`), on 127.0.0.1, with its data in a temporary folder deleted on stop and its
telemetry off (with telemetry on, Azurite 3.37 outlives SIGTERM, and a test must not call out).
Clients use the emulator's well-known account `devstoreaccount1` and its published key, in a
connection string (AZURE_STORAGE_CONNECTION_STRING, the variable a real deployment sets).

Any failure (no npm, no network to install, the server not answering) raises
AzuriteUnavailable with the reason: tests must fail on it, never skip.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.servers import processes

AZURITE_VERSION = "3.37.0"   # `npm view azurite version` when this was written
ADLFS_REQUIREMENT = "adlfs==2026.8.0"  # as the `azure` and `test` extras in pyproject.toml
ACCOUNT = "devstoreaccount1"
# Azurite's documented development key (public, the same in every Azurite): not a secret, but
# tests still check it never shows in a message, as a real key must not.
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# variables that would give adlfs other credentials: unset while the emulator's environment is in force
CLEARED = ("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN",
           "AZURE_STORAGE_CLIENT_ID", "AZURE_STORAGE_CLIENT_SECRET", "AZURE_STORAGE_TENANT_ID", "AZURE_STORAGE_ANON")


class AzuriteUnavailable(RuntimeError):
    """Azurite (or adlfs) could not be installed or started; the message says why."""


def cache_dir() -> Path:
    return Path(os.environ.get("LOGLOOP_AZURITE_DIR") or Path.home() / ".cache" / "logloop-azurite")


def ensure_azurite() -> Path:
    """The `azurite-blob` executable, npm-installed into cache_dir() when missing."""
    prefix = cache_dir()
    exe = prefix / "node_modules" / ".bin" / "azurite-blob"
    if exe.exists():
        return exe
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise AzuriteUnavailable("node and npm are needed to install Azurite (the `azurite` npm package); none on PATH")
    prefix.mkdir(parents=True, exist_ok=True)
    with open(prefix / ".install.lock", "w") as lock:  # parallel test processes install once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if exe.exists():
            return exe
        try:
            done = subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                                   f"azurite@{AZURITE_VERSION}"], capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise AzuriteUnavailable(f"`npm install azurite@{AZURITE_VERSION}` took over 600 s") from None
        if done.returncode != 0 or not exe.exists():
            raise AzuriteUnavailable(f"could not install Azurite with `npm install --prefix {prefix} "
                                     f"azurite@{AZURITE_VERSION}` (exit {done.returncode}): "
                                     f"{(done.stderr or done.stdout)[-2000:]}")
    return exe


def ensure_adlfs() -> None:
    """adlfs importable in this interpreter: it is in the `test` extra; an older venv gets it by pip."""
    try:
        import adlfs  # noqa: F401
        return
    except ImportError:
        pass
    try:
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", ADLFS_REQUIREMENT],
                              capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise AzuriteUnavailable(f"`pip install {ADLFS_REQUIREMENT}` took over 600 s") from None
    if done.returncode != 0:
        raise AzuriteUnavailable(f"could not install {ADLFS_REQUIREMENT} with pip (exit {done.returncode}): "
                                 f"{(done.stderr or done.stdout)[-2000:]}")
    importlib.invalidate_caches()
    import adlfs  # noqa: F401


class AzuriteServer:
    """`azurite-blob` on 127.0.0.1:`port` (a free one by default), data in a temporary folder."""

    def __init__(self, port: int | None = None, start_timeout_s: float = 60.0):
        self.port = port or processes.free_port()
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen | None = None
        self._log = None
        self._data: str | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    def connection_string(self, key: str = ACCOUNT_KEY) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={key};"
                f"BlobEndpoint={self.endpoint_url};")

    @property
    def env(self) -> dict[str, str]:
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string()}

    @contextlib.contextmanager
    def environment(self):
        """os.environ with `env` set and CLEARED unset (restored after)."""
        with processes.environment(self.env, CLEARED):
            yield self

    def start(self) -> "AzuriteServer":
        if self.proc is not None and self.proc.poll() is None:
            return self
        exe = ensure_azurite()
        self._data = tempfile.mkdtemp(prefix="logloop-azurite-")
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [str(exe), "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--location", self._data,
             "--skipApiVersionCheck", "--loose", "--disableTelemetry"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                out = self.output()[-2000:]
                self.stop()
                raise AzuriteUnavailable(f"azurite-blob exited with {rc}: {out}")
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}?comp=list", timeout=2):
                    return self
            except urllib.error.HTTPError:  # any HTTP answer (403 without a signature): it is up
                return self
            except OSError:
                time.sleep(0.1)
        out = self.output()[-2000:]
        self.stop()
        raise AzuriteUnavailable(f"azurite-blob did not answer on {self.endpoint_url} in {self.start_timeout_s:g} s: {out}")

    def output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        """Stop the server (its process group) and delete its data."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._data is not None:
            shutil.rmtree(self._data, ignore_errors=True)
            self._data = None

    def service_client(self, key: str = ACCOUNT_KEY):
        """An azure-storage-blob client for this server (setting up fixtures; code under test uses its own)."""
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string(key))

    def __enter__(self) -> "AzuriteServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
