"""Real services for the tests: the machine's (AUTOOPS_TEST_*_URL) or embedded ones."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from infra import embedded


@contextmanager
def postgres_server(tmp: Path) -> Iterator[str]:
    """An admin URL of a PostgreSQL server."""
    url = os.environ.get("AUTOOPS_TEST_DATABASE_URL")
    if url:
        yield url
        return
    service = embedded.start_postgres(tmp / "pg")
    try:
        yield service.url
    finally:
        service.stop()


def with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new, empty database for this run, dropped afterwards."""
    name = f"autoops_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def redis_server(tmp: Path) -> Iterator[str]:
    url = os.environ.get("AUTOOPS_TEST_REDIS_URL")
    if url:
        yield url
        return
    service = embedded.start_redis(tmp / "redis")
    try:
        yield service.url
    finally:
        service.stop()


@contextmanager
def kafka_broker() -> Iterator[embedded.Service]:
    service = embedded.start_tansu()
    try:
        yield service
    finally:
        service.stop()
