from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import services


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with services.postgres_server(tmp_path_factory.mktemp("pg")) as url:
        yield url


@pytest.fixture
def database_url(pg_admin_url: str) -> Iterator[str]:
    """Each test that asks gets its own empty database."""
    with services.fresh_database(pg_admin_url) as url:
        yield url


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with services.redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def kafka_session() -> Iterator[services.embedded.Service]:
    with services.kafka_broker() as broker:
        yield broker


@pytest.fixture
def kafka_bootstrap(kafka_session: services.embedded.Service) -> str:
    return kafka_session.url


@pytest.fixture
def tmp_data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"
