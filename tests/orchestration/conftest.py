"""Fixtures the sensor tests share: an embedded store and a temporary Dagster instance."""

import pytest

from resources.store_resources import SQLiteStore
from tests.instances import fresh_instance


@pytest.fixture
def store(tmp_path):
    return SQLiteStore(path=str(tmp_path / "store.sqlite"))


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "home").mkdir()
    with fresh_instance(temp_dir=str(tmp_path / "home")) as inst:
        yield inst
