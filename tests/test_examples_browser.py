"""The published examples' vanilla-JS client and HTML controller, unmodified, in Chromium.

The page and its script are cut out of the seed document at run time (never
copied into the repo) and served from another origin that the box allows. The
page hard-codes ``ws://localhost:8000/ws``; Chromium maps that host and port
onto the box under test. The box is the real one: ``python -m appliance run``
with the jalv engine on its own JACK dummy server.
"""

from __future__ import annotations

import functools
import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.boxproc import ROOT, free_port, running_box, virtual_config
from tests.conftest import require_jalv_tools

SEED = ROOT.parent / "shared" / "seed" / "websocket-plugin-integration-examples.md"
CHROMIUM = "/usr/bin/chromium"
UI_TIMEOUT_MS = 20000


def _block(text: str, heading: str, language: str) -> str:
    start = text.index(heading)
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(text, start)
    assert match is not None, f"no {language} block after {heading}"
    return match.group(1)


@pytest.fixture(scope="module")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The examples' page and client class served over HTTP on loopback; yields its origin."""
    if not SEED.exists():
        pytest.skip(f"the published examples are not here ({SEED})")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no {CHROMIUM}: ./scripts/setup --test installs Debian's chromium")
    require_jalv_tools()
    text = SEED.read_text(encoding="utf-8")
    site = tmp_path_factory.mktemp("site")
    (site / "AudioPluginWebSocket.js").write_text(_block(text, "### WebSocket Client Class", "javascript"))
    (site / "controller.html").write_text(_block(text, "### Simple Plugin Controller", "html"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_two_tabs_see_each_other_and_a_late_tab_sees_the_board(example_site: str, tmp_path: Path) -> None:
    """Add a reverb, move a slider and bypass in one tab; the other tab and a later third tab agree."""
    from playwright.sync_api import expect, sync_playwright

    port = free_port()
    config = virtual_config(tmp_path, allowed_origins=[example_site], demo=[])
    with running_box(config, port), sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                f"--host-resolver-rules=MAP localhost:8000 127.0.0.1:{port}",
            ],
        )
        try:
            context = browser.new_context()
            context.set_default_timeout(UI_TIMEOUT_MS)
            first, second = context.new_page(), context.new_page()
            for page in (first, second):
                page.goto(f"{example_site}/controller.html")
                expect(page.locator("#status")).to_have_class(re.compile("connected"))
                expect(page.locator("#status")).not_to_have_class(re.compile("disconnected"))

            first.select_option("#pluginType", "reverb")
            first.click("text=Add Plugin")
            for page in (first, second):
                expect(page.locator(".plugin-item .plugin-name")).to_have_text(["Reverb"])

            slider = first.locator(".parameter", has=first.locator("label", has_text="wet_dry")).locator(
                "input"
            )
            slider.fill("0.7")
            other = second.locator(".parameter", has=second.locator("label", has_text="wet_dry"))
            expect(other.locator(".parameter-value")).to_have_text("0.700")
            expect(other.locator("input")).to_have_value("0.7")

            first.click(".plugin-item >> text=Bypass")
            for page in (first, second):
                expect(page.locator(".plugin-item")).to_have_class(re.compile("bypassed"))
                expect(page.locator(".plugin-item >> text=Enable")).to_be_visible()
            assert first.locator("#error-message").text_content() == ""

            third = context.new_page()
            third.goto(f"{example_site}/controller.html")
            expect(third.locator(".plugin-item .plugin-name")).to_have_text(["Reverb"])
            expect(third.locator(".plugin-item")).to_have_class(re.compile("bypassed"))
            late = third.locator(".parameter", has=third.locator("label", has_text="wet_dry"))
            expect(late.locator(".parameter-value")).to_have_text("0.700")
        finally:
            browser.close()
