"""http.request against a real HTTP server on the loopback interface."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.unit.runners.stepping import WORKSPACE, StepRunner

PNG = b"\x89PNG\r\n\x1a\n\xff\xfe\x00"


@dataclass
class Web:
    url: str = ""
    arrived: threading.Event = field(default_factory=threading.Event)
    sent_first: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


def _handler(web: Web) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def handle_any(self) -> None:
            parts = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            route = parts.path
            if route == "/echo":
                self.send(
                    200,
                    "application/json",
                    json.dumps(
                        {
                            "method": self.command,
                            "query": dict(parse_qsl(parts.query)),
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                            "authorizations": len(self.headers.get_all("authorization") or []),
                            "body": body.decode(),
                        }
                    ).encode(),
                )
            elif route == "/text":
                self.send(200, "text/plain; charset=utf-8", "hello wörld".encode())
            elif route == "/json-as-text":
                self.send(200, "text/plain", b'{"a": [1, 2]}')
            elif route.startswith("/status/"):
                status = int(route.rsplit("/", 1)[1])
                self.send(status, "text/plain", f"failure {status} details".encode())
            elif route == "/unauthorized":
                said = self.headers.get("authorization", "")
                self.send(401, "text/plain", f"token {said} is refused".encode())
            elif route == "/binary":
                self.send(200, "image/png", PNG)
            elif route == "/big":
                self.send(200, "text/plain", b"x" * 2048)
            elif route == "/chunked-big":
                self.chunked([b"y" * 512] * 4)
            elif route == "/redirect":
                self.send_response(302)
                self.send_header("location", "/echo?from=redirect")
                self.send_header("content-length", "0")
                self.end_headers()
            elif route == "/trickle":
                self.chunked([b"first"], then_wait=True)
            elif route == "/hang":
                web.arrived.set()
                web.release.wait(30)
                self.send(200, "text/plain", b"late")
            else:
                self.send(404, "text/plain", b"no such route")

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = handle_any

        def send(self, status: int, content_type: str, data: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.write(data)

        def chunked(self, chunks: list[bytes], then_wait: bool = False) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for chunk in chunks:
                self.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            if then_wait:
                web.sent_first.set()
                web.release.wait(30)
                self.write(b"4\r\nmore\r\n")
            self.write(b"0\r\n\r\n")

        def write(self, data: bytes) -> None:
            try:
                self.wfile.write(data)
                self.wfile.flush()
            except OSError:
                pass  # the step went away (cancelled, or its limit reached)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def web() -> Iterator[Web]:
    state = Web()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    state.release.set()
    httpd.shutdown()
    httpd.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_a_get_returns_status_lowercased_headers_and_the_parsed_json_body(
    steps: StepRunner, web: Web
) -> None:
    config = {
        "url": f"{web.url}/echo",
        "query": {"q": "a b", "n": "1"},
        "headers": {"X-Trace": "t-1"},
    }
    output = steps.run("http.request", config)
    assert output["status"] == 200
    assert output["headers"]["content-type"] == "application/json"
    assert output["body"]["method"] == "GET"
    assert output["body"]["query"] == {"q": "a b", "n": "1"}
    assert output["body"]["headers"]["x-trace"] == "t-1"


def test_an_object_body_is_sent_as_json_and_text_as_text(steps: StepRunner, web: Web) -> None:
    sent = steps.run("http.request", {"method": "POST", "url": f"{web.url}/echo", "body": {"a": 1}})
    assert json.loads(sent["body"]["body"]) == {"a": 1}
    assert sent["body"]["headers"]["content-type"] == "application/json"
    sent = steps.run("http.request", {"method": "PUT", "url": f"{web.url}/echo", "body": "plain"})
    assert (sent["body"]["method"], sent["body"]["body"]) == ("PUT", "plain")


def test_text_stays_text_and_json_is_parsed_whatever_the_content_type(
    steps: StepRunner, web: Web
) -> None:
    assert steps.run("http.request", {"url": f"{web.url}/text"})["body"] == "hello wörld"
    assert steps.run("http.request", {"url": f"{web.url}/json-as-text"})["body"] == {"a": [1, 2]}


def test_a_binary_body_goes_to_the_artifact_store(steps: StepRunner, web: Web) -> None:
    body = steps.run("http.request", {"url": f"{web.url}/binary"})["body"]
    ref = body["$artifact"]
    assert (ref["size"], ref["media_type"]) == (len(PNG), "image/png")
    assert steps.artifacts.get_bytes(WORKSPACE, ref["sha256"]) == PNG


def test_redirects_are_followed(steps: StepRunner, web: Web) -> None:
    output = steps.run("http.request", {"url": f"{web.url}/redirect"})
    assert output["body"]["query"] == {"from": "redirect"}


def test_a_head_request_has_an_empty_body(steps: StepRunner, web: Web) -> None:
    output = steps.run("http.request", {"method": "HEAD", "url": f"{web.url}/text"})
    assert (output["status"], output["body"]) == (200, "")


def test_a_bearer_credential_is_sent_and_redacted_from_the_output(
    steps: StepRunner, web: Web
) -> None:
    secrets = {"api": {"kind": "http_bearer", "token": "tok-very-secret"}}
    config = {
        "url": f"{web.url}/echo",
        "headers": {"authorization": "Basic bm90OnVzZWQ="},
        "auth": {"credential": "api"},
    }
    output = steps.run("http.request", config, secrets)
    assert output["body"]["headers"]["authorization"] == "Bearer ***"
    assert output["body"]["authorizations"] == 1  # the credential replaces a configured one
    assert "tok-very-secret" not in json.dumps(output)


def test_basic_and_header_credentials_are_sent(steps: StepRunner, web: Web) -> None:
    secrets = {
        "basic": {"kind": "http_basic", "username": "ann", "password": "pa55word"},
        "key": {"kind": "http_header", "name": "X-Api-Key", "value": "key-123456"},
    }
    echo = f"{web.url}/echo"
    basic = steps.run("http.request", {"url": echo, "auth": {"credential": "basic"}}, secrets)
    assert basic["body"]["headers"]["authorization"] == "Basic ***"
    header = steps.run("http.request", {"url": echo, "auth": {"credential": "key"}}, secrets)
    assert header["body"]["headers"]["x-api-key"] == "***"
    assert base64.b64encode(b"ann:pa55word").decode() not in json.dumps(basic)


def test_a_credential_of_another_kind_is_refused(steps: StepRunner, web: Web) -> None:
    secrets = {"db": {"kind": "postgres", "url": "postgresql://u:p@h/db"}}
    error = steps.fails("http.request", {"url": web.url, "auth": {"credential": "db"}}, secrets)
    assert error.type == "CredentialError"


@pytest.mark.parametrize(("status", "retryable"), [(503, True), (500, True), (429, True)])
def test_server_errors_and_throttling_are_retryable_status_errors(
    steps: StepRunner, web: Web, status: int, retryable: bool
) -> None:
    error = steps.fails("http.request", {"url": f"{web.url}/status/{status}"})
    assert (error.type, error.retryable) == ("HttpStatusError", retryable)
    assert (
        error.message
        == f"GET {web.url}/status/{status} answered {status}: failure {status} details"
    )


@pytest.mark.parametrize("status", [400, 404, 422])
def test_client_errors_are_final_status_errors(steps: StepRunner, web: Web, status: int) -> None:
    error = steps.fails("http.request", {"url": f"{web.url}/status/{status}"})
    assert (error.type, error.retryable) == ("HttpStatusError", False)
    assert f"answered {status}: failure {status}" in error.message


def test_a_secret_echoed_in_an_error_body_is_redacted(steps: StepRunner, web: Web) -> None:
    secrets = {"api": {"kind": "http_bearer", "token": "tok-very-secret"}}
    config = {"url": f"{web.url}/unauthorized", "auth": {"credential": "api"}}
    error = steps.fails("http.request", config, secrets)
    assert error.message.endswith("answered 401: token Bearer *** is refused")


def test_a_refused_connection_is_a_retryable_http_error(steps: StepRunner) -> None:
    error = steps.fails("http.request", {"url": f"http://127.0.0.1:{closed_port()}/"})
    assert (error.type, error.retryable) == ("HttpError", True)


def test_a_server_that_does_not_answer_in_time_is_a_retryable_timeout(
    steps: StepRunner, web: Web
) -> None:
    error = steps.fails("http.request", {"url": f"{web.url}/hang", "timeout_s": 0.3})
    assert (error.type, error.retryable) == ("HttpError", True)
    assert "timed out" in error.message


@pytest.mark.parametrize("route", ["/big", "/chunked-big"])
def test_bodies_over_the_limit_are_refused(steps: StepRunner, web: Web, route: str) -> None:
    limited = steps.with_settings(http_max_response_bytes=1024)
    error = limited.fails("http.request", {"url": f"{web.url}{route}"})
    assert (error.type, error.retryable) == ("ResponseTooLarge", False)


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "not a url"])
def test_only_http_urls_are_accepted(steps: StepRunner, url: str) -> None:
    assert steps.fails("http.request", {"url": url}).type == "ConfigError"


def test_cancelling_while_the_body_streams_stops_at_once(steps: StepRunner, web: Web) -> None:
    steps.cancel_when(web.sent_first)
    started = time.monotonic()
    error = steps.fails("http.request", {"url": f"{web.url}/trickle"})
    assert error.type == "Cancelled"
    assert time.monotonic() - started < 10  # the server still holds the rest (30 s)
    assert not web.release.is_set()


def test_cancelling_while_waiting_for_the_answer_stops_at_once(steps: StepRunner, web: Web) -> None:
    steps.cancel_when(web.arrived)
    started = time.monotonic()
    error = steps.fails("http.request", {"url": f"{web.url}/hang"})
    assert error.type == "Cancelled"
    assert time.monotonic() - started < 10
