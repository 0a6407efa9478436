from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from infra import embedded
from tests import services
from tests.graphql_client import GraphQLClient
from tests.stack import Stack, redis_db, running_stack, stack_settings


@pytest.fixture(scope="module")
def stack_database(pg_admin_url: str) -> Iterator[str]:
    with services.fresh_database(pg_admin_url) as url:
        yield url


@pytest.fixture(scope="module")
def stack(
    stack_database: str,
    kafka_session: embedded.Service,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    settings = stack_settings(
        stack_database,
        kafka_session.url,
        redis_db(redis_url),
        Path(tmp_path_factory.mktemp("stack")),
    )
    with running_stack(settings) as running:
        running.wait_ready()
        yield running


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[GraphQLClient]:
    c = await GraphQLClient.signed_up(stack.url)
    yield c
    await c.close()
