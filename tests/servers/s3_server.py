"""moto's standalone S3 server (`moto[server]`) on loopback: a real S3 API for tests and benchmarks.

    from tests.servers.s3_server import S3Server

    with S3Server() as s3:            # `python -m moto.server` on 127.0.0.1, a free port
        s3.client().create_bucket(Bucket="archive")
        with s3.environment():        # AWS_ENDPOINT_URL and dummy credentials in os.environ
            ...                       # s3fs / boto3 code under test
        s3.stop()                     # a server that goes away mid-run (faults)
        s3.start()                    # back on the same port, empty

The server is a separate process (as a real S3 is): spawn workers, boto3 and s3fs reach it
only over HTTP, and stopping it is what an outage looks like. Its state lives in memory
and is lost on stop; `reset()` empties it without a restart.

pytest fixtures (import them into a test module: `from tests.servers.s3_server import s3, s3_server`):
- `s3_server`: one server for the test session;
- `s3`: that server, emptied, with its environment set for the test (monkeypatch).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

from tests.servers import processes

ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key-do-not-log"   # a recognisable secret: tests assert it never shows
REGION = "us-east-1"
# variables that would point clients elsewhere: unset while a server's environment is in force
CLEARED = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


class S3Server:
    """`python -m moto.server` on 127.0.0.1:`port` (a free one by default)."""

    def __init__(self, port: int | None = None, start_timeout_s: float = 60.0):
        self.port = port or processes.free_port()
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """What a client needs: the endpoint (AWS_ENDPOINT_URL, honoured by botocore, so by
        boto3 and s3fs) and dummy credentials; shared AWS config files are kept out."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    @contextlib.contextmanager
    def environment(self):
        """os.environ with `env` set and CLEARED unset (restored after)."""
        with processes.environment(self.env, CLEARED):
            yield self

    def start(self) -> "S3Server":
        if self.proc is not None and self.proc.poll() is None:
            return self
        self._log = tempfile.TemporaryFile()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode}: {self.output()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=2):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.endpoint_url} in {self.start_timeout_s:g} s")

    def output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        """Stop the server (its objects are gone); clients then fail to connect."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def reset(self) -> None:
        """Delete every bucket and object (moto's reset API), keeping the server up."""
        req = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def client(self):
        """A boto3 S3 client for this server (setting up fixtures; code under test uses its own)."""
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name=REGION,
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        )

    def __enter__(self) -> "S3Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="session")
def s3_server():
    with S3Server() as server:
        yield server


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The session's server, emptied, with its environment set for this test."""
    if s3_server.proc is None or s3_server.proc.poll() is not None:
        s3_server.start()  # a test stopped it
    s3_server.reset()
    for k in CLEARED:
        monkeypatch.delenv(k, raising=False)
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    yield s3_server
