"""Hardening through the real api: security headers, CORS from settings, and the GraphQL limits
(depth, cost, introspection) refusing an operation before it runs."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infra import embedded
from tests import services
from tests.graphql_client import GraphQLClient, GraphQLError
from tests.stack import Stack, redis_db, running_stack, stack_settings
from tests.waiting import http_answer, wait_until

LISTED = "https://app.example.com"
UNLISTED = "https://evil.example.com"
INTROSPECTION = "{ __schema { queryType { name } } }"
DEEP = "{ workflows { nodes { nodes { id } } } }"


@pytest.fixture(scope="module")
def hardened(
    pg_admin_url: str,
    kafka_session: embedded.Service,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """An api (alone: GraphQL validation needs no projections) with production-like limits."""
    with services.fresh_database(pg_admin_url) as database_url:
        settings = stack_settings(
            database_url,
            kafka_session.url,
            redis_db(redis_url),
            Path(tmp_path_factory.mktemp("hardened")),
            AUTOOPS_CORS_ORIGINS=f"{LISTED}, https://admin.example.com",
            AUTOOPS_INTROSPECTION="false",
            AUTOOPS_GRAPHIQL="false",
            AUTOOPS_GRAPHQL_MAX_DEPTH="2",
            AUTOOPS_GRAPHQL_MAX_COST="120",
        )
        with running_stack(settings, ("api",)) as stack:
            wait_until(lambda: http_answer("GET", f"{stack.url}/health/live"), 30, "api live")
            yield stack


def post(stack: Stack, query: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{stack.url}/graphql", json={"query": query}, headers=headers, timeout=5)


def codes(response: httpx.Response) -> list[str]:
    return [e.get("extensions", {}).get("code") for e in response.json().get("errors") or []]


def assert_hardened(response: httpx.Response) -> None:
    headers = response.headers
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert "camera=()" in headers["permissions-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]


def test_every_response_carries_the_security_headers_and_a_strict_policy(stack: Stack) -> None:
    ready = stack.wait_ready()  # every heartbeat fresh: the 200 below is about headers
    assert ready
    responses = [
        httpx.get(f"{stack.url}/health/live", timeout=5),
        httpx.get(f"{stack.url}/health/ready", timeout=5),
        httpx.get(f"{stack.url}/metrics", timeout=5),
        httpx.get(f"{stack.url}/no-such-page", timeout=5),
        post(stack, "{ workflows { nodes { id } } }"),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 404, 200]
    for response in responses:
        assert_hardened(response)
        policy = response.headers["content-security-policy"]
        assert policy.startswith("default-src 'none';"), policy
        assert "script-src" not in policy


def test_graphiql_may_load_its_cdn_scripts_and_its_own_inline_script_only(stack: Stack) -> None:
    page = httpx.get(f"{stack.url}/graphql", headers={"accept": "text/html"}, timeout=5)
    assert page.status_code == 200 and "graphiql" in page.text.lower()
    assert_hardened(page)
    directives = dict(
        d.strip().split(" ", 1) for d in page.headers["content-security-policy"].split(";")
    )
    inline = re.findall(r"<script>(.*?)</script>", page.text, re.S)
    hashes = {
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in inline
    }
    assert inline and set(directives["script-src"].split()) == {"https://unpkg.com", *hashes}
    for external in re.findall(r'(?:src|href)="(https://[^"]+)"', page.text):
        assert external.startswith("https://unpkg.com/"), external
    assert directives["default-src"] == "'none'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"


def test_without_listed_origins_no_other_origin_is_allowed(stack: Stack) -> None:
    preflight = httpx.options(
        f"{stack.url}/graphql",
        headers={"origin": UNLISTED, "access-control-request-method": "POST"},
        timeout=5,
    )
    assert "access-control-allow-origin" not in preflight.headers
    answer = post(stack, INTROSPECTION, origin=UNLISTED)
    assert "access-control-allow-origin" not in answer.headers


def test_introspection_is_answered_by_default(stack: Stack) -> None:
    answer = post(stack, INTROSPECTION)
    assert answer.json() == {"data": {"__schema": {"queryType": {"name": "Query"}}}}


async def test_a_costly_page_is_refused_even_for_a_signed_in_caller(
    client: GraphQLClient,
) -> None:
    query = "query Page($n: Int!) { workflows(first: $n) { nodes { id name } } }"
    assert await client.execute(query, {"n": 10}) == {"workflows": {"nodes": []}}
    with pytest.raises(GraphQLError) as refused:
        await client.execute(query, {"n": 100_000})
    assert refused.value.codes == ["VALIDATION"]
    assert "operation cost 300001 exceeds the limit of 20000" in refused.value.errors[0]["message"]


def test_a_listed_origin_passes_the_preflight_and_another_does_not(hardened: Stack) -> None:
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(
            f"{hardened.url}/graphql",
            headers={
                "origin": origin,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type",
            },
            timeout=5,
        )

    allowed = preflight(LISTED)
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == LISTED
    assert set(allowed.headers["access-control-allow-methods"].split(", ")) == {
        "GET",
        "POST",
        "OPTIONS",
    }
    assert {"authorization", "content-type"} <= set(
        allowed.headers["access-control-allow-headers"].split(", ")
    )
    assert "access-control-allow-credentials" not in allowed.headers
    assert_hardened(allowed)
    refused = preflight(UNLISTED)
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    listed = post(hardened, "{ __typename }", origin=LISTED)
    assert listed.headers["access-control-allow-origin"] == LISTED
    unlisted = post(hardened, "{ __typename }", origin=UNLISTED)
    assert "access-control-allow-origin" not in unlisted.headers


def test_introspection_is_refused_when_turned_off(hardened: Stack) -> None:
    answer = post(hardened, INTROSPECTION)
    assert answer.json()["data"] is None
    assert codes(answer) and set(codes(answer)) == {"VALIDATION"}


def test_depth_and_cost_over_the_limits_are_refused_before_anything_runs(
    hardened: Stack,
) -> None:
    # Anonymous: a query that passed validation would answer UNAUTHENTICATED instead.
    assert codes(post(hardened, "{ workflows { nodes { id } } }")) == ["UNAUTHENTICATED"]
    deep = post(hardened, DEEP)
    assert codes(deep) == ["VALIDATION"]
    assert "exceeds maximum operation depth of 2" in deep.json()["errors"][0]["message"]
    costly = post(hardened, "{ workflows(first: 60) { nodes { id } } }")
    assert codes(costly) == ["VALIDATION"]
    assert "cost 121 exceeds the limit of 120" in costly.json()["errors"][0]["message"]


def test_graphiql_is_not_served_when_turned_off(hardened: Stack) -> None:
    page = httpx.get(f"{hardened.url}/graphql", headers={"accept": "text/html"}, timeout=5)
    assert "graphiql" not in page.text.lower()
    assert_hardened(page)
    assert page.headers["content-security-policy"].startswith("default-src 'none';")
