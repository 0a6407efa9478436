"""`browser.*` steps against Debian's Chromium, on a local site these tests serve: a form, a
table, a download, an upload and an element that appears late. Each test is one execution
with its own browser session, driven step by step the way a browser runner drives it."""

from __future__ import annotations

import json
import shutil
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from infra.artifacts import REF_KEY, FileArtifactStore
from runners.nodes.browser_sessions import BrowserSessions
from tests.display import xvfb
from tests.unit.runners.stepping import WORKSPACE, StepRunner

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)"
)

PAGES = {
    "/form": """<!doctype html><title>Order form</title>
<form id=order onsubmit="event.preventDefault(); document.querySelector('#result').textContent =
  JSON.stringify(Object.fromEntries(new FormData(this)))">
  <input name=name id=name aria-label="Name">
  <input name=note id=note>
  <select name=size id=size><option value=s>Small</option><option value=m>Medium</option>
    <option value=l>Large</option></select>
  <label><input type=checkbox name=gift id=gift> gift</label>
  <label><input type=checkbox name=news id=news checked> news</label>
  <button type=submit data-testid=submit>Place order</button>
</form>
<button id=twice ondblclick="this.textContent='double'">twice</button>
<div id=menu onmouseover="this.textContent='hovered'">menu</div>
<a id=next href=/table>next</a>
<pre id=result></pre>
<input type=password id=pw>
<input id=keys onkeydown="document.querySelector('#pressed').textContent = event.key">
<span id=pressed></span>""",
    "/table": """<!doctype html><title>Prices</title>
<table id=prices><tr><th>Item</th><th>Price</th></tr>
<tr><td>Apple</td><td>1.20</td></tr><tr><td>Pear</td><td>0.90</td></tr></table>
<table id=bare><tr><td>a</td><td>b</td></tr></table>
<a class=link href=/a data-id=1>one</a><a class=link href=/b data-id=2>two</a>""",
    "/files": """<!doctype html><title>Files</title>
<a id=get href=/report.csv download>report</a>
<input type=file id=upload multiple onchange="document.querySelector('#chosen').textContent =
  Array.from(this.files).map(f => f.name + ':' + f.size).join(',')">
<span id=chosen></span>""",
    "/slow": """<!doctype html><title>Slow</title>
<script>setTimeout(() => { const d = document.createElement('div'); d.id = 'late';
  d.textContent = 'finally here'; document.body.appendChild(d); }, 1200)</script>""",
}


class _Site(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/report.csv":
            body, kind = b"item,price\napple,1.20\n", "text/csv"
            extra = {"Content-Disposition": 'attachment; filename="report.csv"'}
        elif self.path in PAGES:
            body, kind, extra = PAGES[self.path].encode(), "text/html; charset=utf-8", {}
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserSessions]:
    root = tmp_path_factory.mktemp("browser")
    runner = StepRunner.at(root)
    sessions = BrowserSessions(runner.settings, runner.artifacts)
    yield sessions
    sessions.close()


class Browser:
    """One execution's steps on one session."""

    def __init__(self, runner: StepRunner) -> None:
        self.runner = runner
        self.execution_id = str(uuid.uuid4())

    def __call__(self, action: str, **config: Any) -> Any:
        return self.runner.run(f"browser.{action}", config, execution_id=self.execution_id)

    def fails(self, action: str, **config: Any) -> Any:
        return self.runner.fails(f"browser.{action}", config, execution_id=self.execution_id)


@pytest.fixture
def browser(tmp_path: Path, sessions: BrowserSessions, site: str) -> Iterator[Browser]:
    runner = StepRunner(sessions.artifacts, sessions.settings, sessions=sessions)
    b = Browser(runner)
    b("open", viewport={"width": 1024, "height": 700})
    yield b
    sessions.release(b.execution_id)


def test_open_and_goto_report_the_page(browser: Browser, site: str) -> None:
    page = browser("goto", url=f"{site}/form")
    assert page == {"url": f"{site}/form", "status": 200, "title": "Order form"}
    missing = browser("goto", url=f"{site}/nowhere")
    assert missing["status"] == 404


def test_a_form_filled_typed_selected_checked_and_submitted(browser: Browser, site: str) -> None:
    browser("goto", url=f"{site}/form")
    assert browser("fill", selector="role=textbox[name='Name']", value="Ada") == {
        "selector": "role=textbox[name='Name']"
    }
    browser("type", selector="#note", text="ring twice", delay_ms=5)
    assert browser("select_option", selector="#size", values="Large")["selected"] == ["l"]
    browser("check", selector="#gift")
    browser("uncheck", selector="#news")
    browser("click", selector="data-testid=submit")
    browser("assert_text", selector="#result", text='"size":"l"')
    result = json.loads(browser("extract_text", selector="#result")["text"])
    assert result == {"name": "Ada", "note": "ring twice", "size": "l", "gift": "on"}


def test_double_click_hover_press_and_text_selectors(browser: Browser, site: str) -> None:
    browser("goto", url=f"{site}/form")
    browser("double_click", selector="#twice")
    browser("assert_text", selector="#twice", text="double", exact=True)
    browser("hover", selector="#menu")
    assert browser("extract_text", selector="#menu") == {"text": "hovered"}
    browser("press", selector="#keys", key="Enter")
    assert browser("extract_text", selector="#pressed") == {"text": "Enter"}
    browser("click", selector="text=next")
    assert browser("wait_for", url="**/table")["url"] == f"{site}/table"


def test_tables_attributes_and_javascript_are_read(browser: Browser, site: str) -> None:
    browser("goto", url=f"{site}/table")
    table = browser("extract_table", selector="#prices")
    assert table["headers"] == ["Item", "Price"]
    assert table["rows"] == [{"Item": "Apple", "Price": "1.20"}, {"Item": "Pear", "Price": "0.90"}]
    assert browser("extract_table", selector="#bare")["rows"] == [["a", "b"]]
    assert browser("extract_attribute", selector=".link", attribute="data-id", all=True) == {
        "values": ["1", "2"],
        "count": 2,
    }
    assert browser("extract_text", selector=".link", all=True)["texts"] == ["one", "two"]
    assert browser("evaluate", expression="document.title") == {"result": "Prices"}
    assert browser("evaluate", expression="n => n * 2", arg=21) == {"result": 42}


def test_a_download_becomes_an_artifact_and_an_upload_takes_one(
    browser: Browser, sessions: BrowserSessions, site: str
) -> None:
    browser("goto", url=f"{site}/files")
    got = browser("download", selector="#get", save_as="reports/prices.csv")
    assert got["filename"] == "report.csv" and got["size"] == 22
    ref = got["file"][REF_KEY]
    store = sessions.artifacts
    assert store.get_bytes(WORKSPACE, ref["sha256"]) == b"item,price\napple,1.20\n"
    assert store.read_file(WORKSPACE, "reports/prices.csv") == b"item,price\napple,1.20\n"
    uploaded = browser(
        "upload_file",
        selector="#upload",
        files=[{"sha256": ref["sha256"], "name": "again.csv"}, {"path": "reports/prices.csv"}],
    )
    assert uploaded["files"] == [
        {"name": "again.csv", "size": 22},
        {"name": "prices.csv", "size": 22},
    ]
    browser("assert_text", selector="#chosen", text="again.csv:22,prices.csv:22", exact=True)


def test_waits_for_a_slow_element_and_screenshots_page_and_element(
    browser: Browser, sessions: BrowserSessions, site: str
) -> None:
    browser("goto", url=f"{site}/slow")
    browser("assert_visible", selector="#late", visible=False)
    assert browser("wait_for", selector="#late", state="visible") == {
        "selector": "#late",
        "state": "visible",
    }
    browser("assert_visible", selector="#late")
    assert browser("wait_for", load_state="load")["url"] == f"{site}/slow"
    page = browser("screenshot", full_page=True)["screenshot"][REF_KEY]
    element = browser("screenshot", selector="#late")["screenshot"][REF_KEY]
    assert page["media_type"] == element["media_type"] == "image/png"
    assert sessions.artifacts.get_bytes(WORKSPACE, page["sha256"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert element["size"] < page["size"]


def test_a_failed_step_reports_the_page_url_and_a_screenshot(
    browser: Browser, sessions: BrowserSessions, site: str
) -> None:
    browser("goto", url=f"{site}/form")
    missing = browser.fails("click", selector="#no-such-button", timeout_s=0.5)
    assert missing.type == "BrowserTimeout" and missing.retryable
    assert "#no-such-button" in missing.message
    assert missing.details["url"] == f"{site}/form"
    shot = missing.details["screenshot"][REF_KEY]
    assert sessions.artifacts.get_bytes(WORKSPACE, shot["sha256"])[:4] == b"\x89PNG"
    wrong = browser.fails("assert_text", selector="#result", text="never", timeout_s=0.3)
    assert wrong.type == "AssertionFailed" and "never" in wrong.message
    assert wrong.details["url"] == f"{site}/form"


def test_sessions_belong_to_their_execution_and_end_with_close(
    browser: Browser, sessions: BrowserSessions, site: str
) -> None:
    browser("goto", url=f"{site}/table")
    other = Browser(browser.runner)
    stray = other.fails("goto", url=f"{site}/form")
    assert stray.type == "NoBrowserSession"
    other("open")
    other("goto", url=f"{site}/form")
    assert browser("evaluate", expression="location.pathname") == {"result": "/table"}
    assert other("close") == {"closed": True}
    assert not sessions.has_session(other.execution_id)
    assert other.fails("extract_text", selector="h1").type == "NoBrowserSession"


def test_bad_configs_fail_before_the_page_is_touched(browser: Browser) -> None:
    assert browser.fails("click", selector="").type == "ConfigError"
    assert browser.fails("wait_for", selector="#a", url="/b").type == "ConfigError"
    assert browser.fails("select_option", selector="#size", values=[]).type == "ConfigError"
    assert browser.fails("upload_file", selector="#f", files=[{"sha256": "0" * 64}]).type == (
        "FileNotFound"
    )
    assert browser.fails("open", viewport={"width": 0, "height": 10}).type == "ConfigError"


def test_a_step_on_another_pool_is_refused(tmp_path: Path) -> None:
    refused = StepRunner.at(tmp_path).fails("browser.goto", {"url": "http://x"})
    assert refused.type == "WrongPool"


def test_open_sets_user_agent_locale_and_cookies(sessions: BrowserSessions, site: str) -> None:
    b = Browser(StepRunner(sessions.artifacts, sessions.settings, sessions=sessions))
    cookie = {"name": "sid", "value": "s3", "url": site}
    opened = b(
        "open",
        url=f"{site}/form",
        user_agent="AutoOpsBot/1.0",
        locale="de-DE",
        storage_state={"cookies": [cookie], "origins": []},
    )
    try:
        assert opened["title"] == "Order form" and opened["headless"] is True
        seen = b(
            "evaluate", expression="[navigator.userAgent, navigator.language, document.cookie]"
        )
        assert seen == {"result": ["AutoOpsBot/1.0", "de-DE", "sid=s3"]}
    finally:
        sessions.release(b.execution_id)


def test_a_cancel_stops_a_waiting_step_at_once(browser: Browser, site: str) -> None:
    browser("goto", url=f"{site}/form")
    timer = threading.Timer(0.3, browser.runner.cancelled.set)
    timer.start()
    try:
        stopped = browser.fails("wait_for", selector="#never", timeout_s=20)
    finally:
        browser.runner.cancelled.clear()
    assert stopped.type == "Cancelled"
    assert browser("extract_text", selector="#twice") == {"text": "twice"}  # the page lives on


@pytest.mark.skipif(not shutil.which("Xvfb"), reason="Xvfb is not installed (.ci/run installs it)")
def test_the_browser_is_headed_on_a_configured_display(tmp_path: Path, site: str) -> None:
    with xvfb() as display:
        runner = StepRunner.at(tmp_path, browser_display=display)
        sessions = BrowserSessions(runner.settings, runner.artifacts)
        try:
            b = Browser(StepRunner(runner.artifacts, runner.settings, sessions=sessions))
            opened = b("open", url=f"{site}/form")
            assert opened["headless"] is False and opened["title"] == "Order form"
            b("click", selector="#twice")
        finally:
            sessions.close()


def test_only_web_pages_are_opened_never_the_runners_files(browser: Browser) -> None:
    for url in ("file:///etc/hostname", "chrome://version", "javascript:alert(1)", "ftp://x"):
        refused = browser.fails("goto", url=url)
        assert refused.type == "ConfigError" and "http" in refused.message
    assert browser.fails("open", url="file:///etc/passwd").type == "ConfigError"
    assert browser("goto", url="about:blank")["url"] == "about:blank"


def test_a_download_over_the_limit_is_refused(browser: Browser, site: str) -> None:
    small = Browser(browser.runner.with_settings(browser_max_download_bytes=10))
    small.execution_id = browser.execution_id  # the same session, a smaller limit
    small("goto", url=f"{site}/files")
    refused = small.fails("download", selector="#get")
    assert refused.type == "DownloadTooLarge" and "22 bytes" in refused.message


def test_concurrent_first_opens_share_one_browser_and_one_context_per_execution(
    tmp_path: Path, site: str
) -> None:
    runner = StepRunner.at(tmp_path)
    sessions = BrowserSessions(runner.settings, runner.artifacts)
    try:
        browsers = [Browser(StepRunner(runner.artifacts, runner.settings, sessions=sessions))]
        browsers += [Browser(browsers[0].runner) for _ in range(2)]
        twice = Browser(browsers[0].runner)
        twice.execution_id = browsers[0].execution_id  # parallel branches of one execution
        threads = [threading.Thread(target=b, args=("open",)) for b in [*browsers, twice]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sessions._browser is not None
        assert len(sessions._browser.contexts) == 3  # one per execution, none left behind
        assert browsers[0]("goto", url=f"{site}/form")["title"] == "Order form"
    finally:
        sessions.close()
    assert sessions._browser is not None and not sessions._browser.is_connected()


def test_a_screenshot_the_store_refuses_leaves_the_failure_as_it_was(
    tmp_path: Path, sessions: BrowserSessions, site: str
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("x")
    broken = FileArtifactStore(blocked)  # every write fails
    b = Browser(StepRunner(broken, sessions.settings, sessions=sessions))
    b("open", url=f"{site}/form")
    original, sessions.artifacts = sessions.artifacts, broken
    try:
        failed = b.fails("click", selector="#missing", timeout_s=0.5)
    finally:
        sessions.artifacts = original
        sessions.release(b.execution_id)
    assert failed.type == "BrowserTimeout" and failed.retryable
    assert failed.details["url"] == f"{site}/form" and "screenshot_error" in failed.details


def test_a_password_is_filled_from_a_credential_and_never_shown(
    browser: Browser, site: str
) -> None:
    login = {"login": {"kind": "http_basic", "username": "ada", "password": "s3cret-pass"}}
    browser("goto", url=f"{site}/form")
    run = browser.runner.run
    filled = run("browser.fill", {"selector": "#pw", "credential": "login"}, login,
                 execution_id=browser.execution_id)  # fmt: skip
    assert filled == {"selector": "#pw"}
    length = "document.querySelector('#pw').value.length"
    assert browser("evaluate", expression=length) == {"result": 11}
    user = {"selector": "#name", "credential": "login", "field": "username"}
    run("browser.fill", user, login, execution_id=browser.execution_id)
    assert browser("evaluate", expression="document.querySelector('#name').value") == {
        "result": "ada"
    }
    failed = browser.runner.fails(
        "browser.fill", {"selector": "#nope", "credential": "login", "timeout_s": 0.5}, login,
        execution_id=browser.execution_id,
    )  # fmt: skip
    assert failed.type == "BrowserTimeout" and "screenshot" not in failed.details
    assert "s3cret-pass" not in json.dumps(failed.details) + failed.message
    missing = browser.runner.fails(
        "browser.fill", {"selector": "#pw", "credential": "login", "field": "token"}, login,
        execution_id=browser.execution_id,
    )  # fmt: skip
    assert missing.type == "CredentialError"
