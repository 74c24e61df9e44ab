"""No resource shows a secret in repr() or str(): every secret field is declared repr=False, also on the
Dagster-free stores the CLI uses (the resources' bases)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import resources
from dagster import ConfigurableResource
from pydantic import BaseModel

SECRET = re.compile(r"pass(word)?|secret|token|api_?key$|credential", re.IGNORECASE)


def _resource_classes(base=ConfigurableResource):
    for info in pkgutil.iter_modules(resources.__path__):
        module = importlib.import_module(f"resources.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, base) and cls.__module__ == module.__name__:
                yield cls


def test_every_secret_field_of_every_resource_is_hidden_from_repr():
    classes = list(_resource_classes())
    assert {c.__name__ for c in classes} >= {"TDengineStore", "OpenSearchLogSource", "SQLiteStore", "LocalArtifactStorage"}
    secret_fields = {(c.__name__, name): field for c in classes for name, field in c.model_fields.items() if SECRET.search(name)}
    assert set(secret_fields) >= {("TDengineStore", "password"), ("OpenSearchLogSource", "password"),
                                  ("OpenSearchLogSource", "api_key")}
    shown = sorted(key for key, field in secret_fields.items() if field.repr)
    assert shown == [], f"secret fields shown by repr(): {shown}"


def test_every_secret_field_of_the_plain_stores_is_hidden_from_repr():
    plain = [c for c in _resource_classes(BaseModel) if not issubclass(c, ConfigurableResource)]
    assert {c.__name__ for c in plain} >= {"SQLStoreCore", "SQLiteStoreCore", "TDengineStoreCore"}
    secret_fields = {(c.__name__, name): field for c in plain for name, field in c.model_fields.items() if SECRET.search(name)}
    assert set(secret_fields) >= {("SQLStoreCore", "password"), ("TDengineStoreCore", "password")}
    shown = sorted(key for key, field in secret_fields.items() if field.repr)
    assert shown == [], f"secret fields shown by repr(): {shown}"


def test_the_environment_built_resources_show_no_secret(monkeypatch, tmp_path):
    from orchestration.resources import build_resources

    monkeypatch.setenv("LOGLOOP_HOME", str(tmp_path))
    monkeypatch.setenv("LOGLOOP_TDENGINE_URL", "http://127.0.0.1:6041")
    monkeypatch.setenv("LOGLOOP_TDENGINE_PASSWORD", "td-s3cret-value")
    monkeypatch.setenv("LOGLOOP_OPENSEARCH_HOSTS", "https://127.0.0.1:9200")
    monkeypatch.setenv("LOGLOOP_OPENSEARCH_PASSWORD", "os-s3cret-value")
    monkeypatch.setenv("LOGLOOP_OPENSEARCH_API_KEY", "os-key-value")
    built = build_resources()
    ready = {name: r.process_config_and_initialize() for name, r in built.items()}  # EnvVars resolved
    assert ready["store"].password == "td-s3cret-value" and ready["log_source"].api_key == "os-key-value"
    for resource in [*built.values(), *ready.values()]:
        for shown in (repr(resource), str(resource)):
            for secret in ("td-s3cret-value", "os-s3cret-value", "os-key-value"):
                assert secret not in shown, (type(resource).__name__, shown)


def test_an_opensearch_host_with_a_password_in_it_is_masked_in_repr():
    from resources.opensearch_source import OpenSearchLogSource

    source = OpenSearchLogSource(hosts=["https://reader:hunter2@os:9200", "https://os2:9200"])
    for shown in (repr(source), str(source)):
        assert "hunter2" not in shown and "https://reader:***@os:9200" in shown and "https://os2:9200" in shown
