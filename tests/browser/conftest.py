"""Pages opened in a real headless Chromium (Debian's chromium package, which
``scripts/ensure-chromium.sh`` installs for ``make test``), driven by Playwright without a
browser download of its own. Without a chromium binary every browser test is skipped,
with the reason the install script left.

Each page is opened offline: a request for anything but the page's own origin is
recorded and refused, and console errors and uncaught exceptions are recorded too, for
``Visit.assert_clean``. Screenshots go to ``test-artifacts/`` (gitignored) for a look.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import uvicorn
from playwright.sync_api import Browser, ConsoleMessage, Page, Route, ViewportSize, sync_playwright
from typer.testing import CliRunner

from commands.api_keys import KeyStore, Role
from commands.bootstrap import bootstrap, projector
from commands.cli import app
from commands.demo import START as DEMO_START
from commands.gateway_webhooks import GatewayWebhooks
from commands.http_api import ApiServices
from commands.http_app import http_app
from ledger.clock import SimulatedClock
from projections.runner import Projector

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
# Why ensure-chromium.sh could not install Chromium, when it could not.
NO_CHROMIUM = ARTIFACTS / "no-chromium.txt"
LAPTOP = ViewportSize(width=1280, height=800)
PHONE = ViewportSize(width=390, height=844)  # an iPhone 12 to 15, in CSS pixels
# Enough signups for every chart to have a year of marks, yet a demo of a few seconds.
DEMO_CUSTOMERS = 100
DEMO_END = DEMO_START.replace(year=DEMO_START.year + 1)  # after the default twelve months


def chromium_binary() -> str:
    """Debian's chromium (or a chromium-browser), or the test is skipped, saying why."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        why = NO_CHROMIUM.read_text().strip() if NO_CHROMIUM.exists() else "none on PATH"
        pytest.skip(f"no chromium binary ({why}); bash scripts/ensure-chromium.sh installs it")
    return found


# Package scope: playwright's sync API keeps an event loop running in this thread while
# open, and the tests run after these (asyncio.run) must not find one.
@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    executable = chromium_binary()
    with sync_playwright() as playwright:
        # --no-sandbox: tests run as root (CI, containers), where Chromium's sandbox refuses.
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


@dataclass
class Visit:
    """An open page, and what went wrong while it loaded and was used."""

    page: Page
    status: int | None = None
    source: str = ""  # the HTML as served, before the browser parsed it
    errors: list[str] = field(default_factory=list)  # console errors, uncaught exceptions
    outside: list[str] = field(default_factory=list)  # requests off the page's origin

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def assert_clean(self) -> None:
        assert self.errors == []
        assert self.outside == []

    def follow(self, act: Callable[[Page], None]) -> None:
        """Does ``act`` (a click that submits a form), then waits for the page it leads to."""
        with self.page.expect_navigation() as navigation:
            act(self.page)
        response = navigation.value
        assert response is not None, f"no response after {act}"
        self.status, self.source = response.status, response.text()

    def no_horizontal_overflow(self) -> bool:
        return bool(self.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))

    def screenshot(self, name: str) -> Path:
        """A full-page screenshot in ``test-artifacts/``."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        self.page.screenshot(path=path, full_page=True)
        return path


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return "file://" if parts.scheme == "file" else f"{parts.scheme}://{parts.netloc}/"


@contextmanager
def visit(
    browser: Browser,
    url: str,
    viewport: ViewportSize = LAPTOP,
    headers: dict[str, str] | None = None,
) -> Iterator[Visit]:
    """``url`` opened in a fresh browser context (no cookies) of ``viewport``'s size, with
    ``headers`` on every request; anything off ``url``'s origin is refused and recorded."""
    origin = _origin(url)
    context = browser.new_context(viewport=viewport, extra_http_headers=headers)
    try:
        opened = Visit(context.new_page())

        def guard(route: Route) -> None:
            if route.request.url.startswith(origin):
                route.continue_()
            else:
                opened.outside.append(route.request.url)
                route.abort()

        context.route("**/*", guard)
        opened.page.on("console", opened.on_console)
        opened.page.on("pageerror", lambda error: opened.errors.append(str(error)))
        response = opened.page.goto(url)
        assert response is not None, f"no response for {url}"
        opened.status, opened.source = response.status, response.text()
        yield opened
    finally:
        context.close()


@dataclass(frozen=True)
class Demo:
    """The demo's ledger (``subledger demo`` on a SQLite file) and the dashboard snapshot
    it wrote beside it."""

    database_url: str
    snapshot: Path


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    folder = tmp_path_factory.mktemp("demo")
    url = f"sqlite:///{folder / 'demo.db'}"
    result = CliRunner().invoke(
        app, ["demo", "--customers", str(DEMO_CUSTOMERS), "--database-url", url]
    )
    assert result.exit_code == 0, result.output
    return Demo(url, folder / "dashboard.html")


@pytest.fixture(scope="session")
def demo_projections(demo: Demo) -> Iterator[Projector]:
    """The demo's ledger and projections, opened again as ``subledger http`` opens them."""
    with bootstrap(demo.database_url) as ledger, projector(ledger, demo.database_url) as running:
        running.setup()
        yield running


@dataclass(frozen=True)
class Live:
    """``subledger http`` on the demo's ledger, and an analyst's key for it."""

    base: str  # http://127.0.0.1:<port>, no trailing slash
    analyst_key: str


@pytest.fixture(scope="session")
def live(demo_projections: Projector) -> Iterator[Live]:
    """The app as ``subledger http`` builds it, served by uvicorn on a free port in a
    thread; the clock stands at the demo's last day."""
    database = demo_projections.database
    clock = SimulatedClock(DEMO_END)
    keys = KeyStore(database)
    keys.setup()
    _, analyst_key = keys.create(Role.ANALYST, "browser tests", clock.now())
    catch_up = demo_projections.catch_up
    receiver = GatewayWebhooks(demo_projections.ledger, clock, {}, database, catch_up)
    services = ApiServices(demo_projections.ledger, clock, database, catch_up, keys)
    server = uvicorn.Server(uvicorn.Config(http_app(receiver, services), log_level="warning"))
    # Bound here, so the port is known (and ours) before the server starts.
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped before it started"
            assert time.monotonic() < deadline, "uvicorn did not start in 10 s"
            time.sleep(0.02)
        yield Live(f"http://127.0.0.1:{port}", analyst_key)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listening.close()
