"""The status page in headless Chromium: a submitted item moves through its stages to landed
and a rejected item shows its reason and log, all without a reload; a screenshot is kept."""

from __future__ import annotations

from pathlib import Path

import httpx

from lockstep.server.app import create_app
from lockstep.server.settings import Secrets, ServeSettings
from tests.infra.browser import browser_page
from tests.infra.serve import TOKEN, app_in_thread
from tests.system import System

WAIT_MS = 30_000  # a safety net only: each step waits for what the page shows


def test_the_page_follows_an_item_to_landed_and_shows_a_rejection(tmp_path: Path) -> None:
    system = System.create(tmp_path / "sys", configurations=("default",))
    build_gate, check_gate = tmp_path / "build.release", tmp_path / "check.release"
    system.set_rules({"build": {"wait_file": str(build_gate)},
                      "check": {"wait_file": str(check_gate),
                                "fail_if": [["beta", "v1.2.0"]], "exit": 3}})
    app = create_app(system.ws_dir, ServeSettings(poll_seconds=0.2, cache_seconds=0.1),
                     Secrets(TOKEN, None))
    with app_in_thread(app) as url, browser_page() as page, httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        worker = system.start_worker("--forever", "--poll", "0.1")
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(url + "/")
        page.wait_for_selector("#queue-state.idle", timeout=WAIT_MS)
        page.wait_for_selector("#mode[data-mode=live]", timeout=WAIT_MS)  # on the event stream
        page.evaluate("window.__sameDocument = true")
        item = api.post("/api/queue/items",
                        json={"component": "alpha", "version": "v1.1.0"}).json()["id"]

        card = f"#runners [data-item={item}]"
        page.wait_for_selector(f"{card} [data-stage=build][data-state=running]",
                               timeout=WAIT_MS)
        # The runner line and the stage chips are read in two transactions: wait for both.
        page.wait_for_selector(f"{card} .runner:has-text('testing default/build')",
                               timeout=WAIT_MS)
        assert page.get_attribute(f"{card} [data-stage=check]", "data-state") == "pending"
        build_gate.touch()
        page.wait_for_selector(f"{card} [data-stage=check][data-state=running]",
                               timeout=WAIT_MS)
        assert page.get_attribute(f"{card} [data-stage=build]", "data-state") == "passed"
        page.screenshot(path=str(tmp_path / "status-page-testing.png"), full_page=True)
        check_gate.touch()
        landed = f"#recent [data-item={item}][data-state=landed]"
        page.wait_for_selector(landed, timeout=WAIT_MS)
        tag = next(iter(system.remote_tags()))
        assert f"landed as {tag}" in page.text_content(landed)
        page.wait_for_selector(f"#release-list [data-tag='{tag}']", timeout=WAIT_MS)
        assert "alpha v1.0.0 → v1.1.0 [default]" in page.text_content("#release-list")

        bad = api.post("/api/queue/items",
                       json={"component": "beta", "version": "v1.2.0"}).json()["id"]
        rejected = f"#recent [data-item={bad}][data-state=rejected]"
        page.wait_for_selector(rejected, timeout=WAIT_MS)
        assert "stage-failed at default/check: stage check exited 3" in page.text_content(
            f"{rejected} .reason")
        assert "gate check for default" in page.text_content(f"{rejected} pre.log")
        assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
        shot = tmp_path / "status-page.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"status page screenshots: {tmp_path / 'status-page-testing.png'} {shot}")
        assert shot.stat().st_size > 10_000
        assert errors == [], errors
        worker.kill()
