"""ObjectArtifactStorage on Azure Blob (adlfs) against Azurite, Microsoft's emulator, on loopback.

The S3 suite (tests/resources/test_object_artifacts.py) covers the faults in depth; this runs the az://
path once: the storage contract, a failed write leaves nothing, an atomic replace that readers
never see half of, and a missing container or a wrong key failing in one line that names the
URL and shows no key. Azurite is npm-installed and adlfs pip-installed when missing
(tests/servers/azurite_server.py); a failure to install or start fails the test, never skips it.
Credentials reach adlfs only through AZURE_STORAGE_CONNECTION_STRING, as in a deployment.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from ops.naming import InvalidName
from resources.artifacts import ArtifactStorageError
from resources.artifacts import ObjectArtifactStorage
from tests.artifact_checks import replace_under_readers
from tests.servers.azurite_server import ACCOUNT_KEY, CLEARED, AzuriteServer, AzuriteUnavailable, ensure_adlfs


PREFIX = "logloop"


@pytest.fixture(scope="module")
def azurite():
    started, error = time.monotonic(), None
    try:
        ensure_adlfs()
        server = AzuriteServer().start()
    except AzuriteUnavailable as exc:
        error = str(exc)
    if error is not None:  # a failure, never a skip: the az:// path must be tested
        pytest.fail(f"Azurite is needed for the az:// artifact tests: {error}", pytrace=False)
    print(f"adlfs + Azurite ready in {time.monotonic() - started:.1f} s")
    yield server
    server.stop()


@pytest.fixture
def container(azurite, monkeypatch):
    """A fresh container, with the emulator's connection string as the only Azure credentials."""
    for k in CLEARED:
        monkeypatch.delenv(k, raising=False)
    for k, v in azurite.env.items():
        monkeypatch.setenv(k, v)
    name = f"artifacts-{uuid.uuid4().hex[:12]}"
    azurite.service_client().create_container(name)
    return name


def storage(tmp_path, container, scheme="az", **kw) -> ObjectArtifactStorage:
    return ObjectArtifactStorage(url=f"{scheme}://{container}/{PREFIX}", cache_dir=str(tmp_path / "cache"), **kw)


def blobs(azurite: AzuriteServer, container: str) -> list[str]:
    return sorted(b.name for b in azurite.service_client().get_container_client(container).list_blobs())


def assert_one_line(exc: BaseException, *must: str):
    text = str(exc)
    assert "\n" not in text, text
    assert ACCOUNT_KEY not in text and ACCOUNT_KEY not in repr(exc), text
    assert "AccountKey" not in text and "AccountKey" not in repr(exc), text
    for m in must:
        assert m in text, (m, text)


def test_azure_contract_write_read_exists_list_delete(azurite, container, tmp_path, monkeypatch):
    st = storage(tmp_path, container)
    assert not st.exists("summaries/a.parquet") and st.list("summaries") == []
    for key, text in [("summaries/b.parquet", "b"), ("summaries/a.parquet", "a"), ("summaries/sub/c.json", "c"),
                      ("models/m.zip", "m")]:
        with st.writing(key) as tmp:
            Path(tmp).write_text(text)
    assert st.exists("summaries/a.parquet") and st.exists("summaries")  # a key and a folder, as on disk
    assert st.list("summaries") == ["summaries/a.parquet", "summaries/b.parquet", "summaries/sub/c.json"]
    assert st.list("summaries/sub") == ["summaries/sub/c.json"] and st.list("nothing") == []
    assert st.uri("models/m.zip") == f"az://{container}/{PREFIX}/models/m.zip"
    assert blobs(azurite, container) == [f"{PREFIX}/models/m.zip", f"{PREFIX}/summaries/a.parquet",
                                         f"{PREFIX}/summaries/b.parquet", f"{PREFIX}/summaries/sub/c.json"]
    with st.reading("summaries/a.parquet") as path:
        assert Path(path).read_text() == "a" and path.endswith("a.parquet")
    assert not os.path.exists(path)
    st.delete("summaries/a.parquet")
    st.delete("summaries/never-was.parquet")  # no error, as on disk
    assert not st.exists("summaries/a.parquet")
    with pytest.raises(FileNotFoundError, match="summaries/a.parquet"):
        with st.reading("summaries/a.parquet"):
            pass
    st.delete("summaries")  # a folder goes whole
    assert st.list("summaries") == [] and blobs(azurite, container) == [f"{PREFIX}/models/m.zip"]
    for bad in ("../x", "/abs", "a//b", ".tmp-x"):
        with pytest.raises(InvalidName):
            with st.writing(bad):
                pass
    # abfs:// is the same store; LOGLOOP_ARTIFACTS_URL=az://… selects it
    with storage(tmp_path, container, scheme="abfs").reading("models/m.zip") as path:
        assert Path(path).read_text() == "m"
    from orchestration.resources import artifact_storage

    monkeypatch.setenv("LOGLOOP_ARTIFACTS_URL", f"az://{container}/{PREFIX}")
    selected = artifact_storage()
    assert isinstance(selected, ObjectArtifactStorage) and selected.exists("models/m.zip")


def test_azure_failed_write_leaves_nothing_and_replace_is_atomic(azurite, container, tmp_path):
    st = storage(tmp_path, container)
    size = 2 * 1024 * 1024
    with st.writing("models/m.zip") as tmp:
        Path(tmp).write_bytes(b"a" * size)
    for key in ("models/m.zip", "models/new.zip"):  # a replace and a first write, both failing
        with pytest.raises(RuntimeError, match="boom"):
            with st.writing(key) as tmp:
                Path(tmp).write_bytes(b"half of the new")
                raise RuntimeError("boom")
        assert not os.path.exists(tmp)
    assert blobs(azurite, container) == [f"{PREFIX}/models/m.zip"] and st.list("models") == ["models/m.zip"]

    replace_under_readers(st, lambda: storage(tmp_path, container), "models/m.zip", size)  # each its own client
    # replaced by another writer: a new ETag, so the cached copy is not served
    azurite.service_client().get_blob_client(container, f"{PREFIX}/models/m.zip").upload_blob(b"c" * size, overwrite=True)
    with st.reading("models/m.zip") as path:
        assert Path(path).read_bytes() == b"c" * size


def test_azure_missing_container_or_wrong_key_fail_in_one_line_naming_the_url(azurite, container, tmp_path,
                                                                              monkeypatch):
    missing = "no-such-container"
    st = storage(tmp_path, missing)
    for op in (lambda: st.exists("a.json"), lambda: st.list("models"), lambda: st.reading("a.json").__enter__()):
        with pytest.raises(ArtifactStorageError) as err:
            op()
        assert_one_line(err.value, f"az://{missing}/{PREFIX}", f"container '{missing}' does not exist")
    with pytest.raises(ArtifactStorageError) as err:
        with st.writing("a.json") as tmp:
            Path(tmp).write_text("{}")
    assert_one_line(err.value, f"az://{missing}/{PREFIX}", "does not exist")
    assert not os.path.exists(tmp)

    wrong = "d3Jvbmcta2V5LW5vdC10aGUtZW11bGF0b3Itb25lLWF0LWFsbC0xMjM0NTY3OA=="
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string(key=wrong))
    st = storage(tmp_path, container)
    for op in (lambda: st.exists("a.json"), lambda: st.reading("a.json").__enter__()):
        with pytest.raises(ArtifactStorageError) as err:
            op()
        assert_one_line(err.value, f"az://{container}/{PREFIX}", "access denied", "AZURE_STORAGE_CONNECTION_STRING")
        assert wrong not in str(err.value) and wrong not in repr(err.value)
    assert blobs(azurite, container) == []
