"""HTTP hardening: security headers on every response and CORS from settings."""

from __future__ import annotations

import base64
import hashlib
from html.parser import HTMLParser
from urllib.parse import urlsplit

from litestar.config.cors import CORSConfig
from litestar.datastructures import MutableScopeHeaders
from litestar.types import BeforeMessageSendHookHandler, Message, Scope
from strawberry.http.ides import get_graphql_ide_html

from infra.settings import Settings

# The api answers JSON and text only: nothing it serves may load, run or frame anything.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(), geolocation=(), microphone=(), payment=(), usb=()",
}


def security_headers(graphiql_path: str | None = None) -> BeforeMessageSendHookHandler:
    """A `before_send` hook setting the security headers on every HTTP response. The HTML page
    at `graphiql_path` (the GraphiQL IDE, when served) gets `graphiql_csp` instead of
    `API_CSP`."""
    ide_csp = graphiql_csp(get_graphql_ide_html("graphiql")) if graphiql_path else API_CSP

    async def add_security_headers(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start":
            return
        message.setdefault("headers", [])
        headers = MutableScopeHeaders.from_message(message)
        ide = scope["path"] == graphiql_path and headers.get("content-type", "").startswith(
            "text/html"
        )
        headers["Content-Security-Policy"] = ide_csp if ide else API_CSP
        for name, value in HEADERS.items():
            headers[name] = value

    return add_security_headers


def graphiql_csp(html: str) -> str:
    """The policy that lets exactly this IDE page work: its external scripts and stylesheets
    (pinned by SRI) from their CDN origins, its inline script by hash, inline styles (the
    editor sets style attributes), data: fonts and images, and fetch/websocket to the api."""
    page = _PageResources()
    page.feed(html)
    page.close()
    cdn_styles = sorted(page.style_origins)
    directives = {
        "default-src": ["'none'"],
        "script-src": [*sorted(page.script_origins), *sorted(page.script_hashes)],
        "style-src": [*cdn_styles, "'unsafe-inline'"],
        "font-src": [*cdn_styles, "data:"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())


class _PageResources(HTMLParser):
    """The origins of a page's external scripts and stylesheets and the hashes of its inline
    scripts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.script_origins: set[str] = set()
        self.style_origins: set[str] = set()
        self.script_hashes: set[str] = set()
        self._inline: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script":
            src = attributes.get("src")
            if src:
                self.script_origins.add(_origin(src))
            else:
                self._inline = []
        elif tag == "link" and attributes.get("rel") == "stylesheet":
            self.style_origins.add(_origin(attributes.get("href") or ""))

    def handle_data(self, data: str) -> None:
        if self._inline is not None:
            self._inline.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._inline is not None:
            digest = hashlib.sha256("".join(self._inline).encode()).digest()
            self.script_hashes.add(f"'sha256-{base64.b64encode(digest).decode()}'")
            self._inline = None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else "'self'"


def cors_config(settings: Settings) -> CORSConfig | None:
    """CORS for the origins in `AUTOOPS_CORS_ORIGINS`; none listed: same origin only (no
    CORS headers at all). Tokens travel in the Authorization header, never in cookies, so
    credentials stay off."""
    if not settings.allowed_origins:
        return None
    return CORSConfig(
        allow_origins=settings.allowed_origins,
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["authorization", "content-type"],
        allow_credentials=False,
    )
