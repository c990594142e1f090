"""/console/ in a real headless chromium, against real gunicorn, a worker and Redis.

Every page loads with no console error and nothing fetched from off this machine; a filter
finds a job; a bulk retry (after a confirmation that states the count) makes failed jobs
succeed; a chart has points; the overview refreshes itself; a read-only user has no action.
Screenshots are saved under $TEST_ARTIFACTS_DIR (default tests/artifacts/), named console-*.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import requests

from tests.browser import CHROMIUM, CHROMIUM_ARGS, artifacts_dir, ensure_chromium
from tests.conftest import DASHBOARD, TOKEN
from tests.servers import Starter, start_web, start_worker, wait_for

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {TOKEN}"}
READER = ("auditor", "read-only-password-1")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = ensure_chromium()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _context(browser: Any, user: tuple[str, str]) -> Any:
    """A logged-in context whose pages record console errors; requests off this machine are aborted."""
    context = browser.new_context(
        http_credentials={"username": user[0], "password": user[1]}, viewport={"width": 1360, "height": 900}
    )
    context.external = []
    context.errors = []

    def only_local(route: Any) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            context.external.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    return context


def _page(context: Any) -> Any:
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.on("console", lambda m: m.type == "error" and context.errors.append(f"{page.url}: {m.text}"))
    page.on("pageerror", lambda e: context.errors.append(f"{page.url}: {e}"))
    return page


def _shot(page: Any, name: str) -> None:
    assert page.title().endswith(" · Tasklane") and len(page.title()) < 60, page.title()
    page.screenshot(path=str(artifacts_dir() / f"console-{name}.png"), full_page=True)


def _post(base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = requests.post(f"{base}{path}", json=body, headers=AUTH, timeout=10)
    assert response.status_code == 202, response.text
    return dict(response.json())


def _state(base: str, job_id: str) -> str:
    return str(requests.get(f"{base}/api/v1/jobs/{job_id}", headers=AUTH, timeout=10).json()["state"])


def _until(base: str, job_id: str, *states: str, timeout: float = 30) -> None:
    wait_for(lambda: _state(base, job_id) in states, timeout, 0.1, f"job {job_id} to be {states}")


def test_console_in_a_real_browser(browser: Any, start: Starter, rconn: redis.Redis, tmp_path: Path) -> None:
    base = start_web(start, CONSOLE_READONLY_USERS=f"{READER[0]}:{READER[1]}")
    start_worker(start, rconn, "default", "--mode", "inline")
    done = [_post(base, "/api/v1/tasks/add", {"args": {"x": n, "y": 1}})["job_id"] for n in range(5)]
    files = [tmp_path / f"needed-{n}.txt" for n in range(3)]
    failing = [_post(base, "/api/v1/tasks/needs_file", {"args": {"path": str(f)}})["job_id"] for f in files]
    chord = {
        "type": "chord",
        "steps": [{"task": "add", "args": {"x": n, "y": n}} for n in range(4)],
        "callback": {"task": "xsum", "args": {}},
    }
    workflow = _post(base, "/api/v1/workflows", chord)
    for job_id in done:
        _until(base, job_id, "SUCCESS")
    for job_id in failing:
        _until(base, job_id, "FAILURE")
    for job_id in workflow["job_ids"]:
        _until(base, job_id, "SUCCESS", "FAILURE")

    operator = _context(browser, DASHBOARD)
    page = _page(operator)

    # Overview: the charts have points for what just ran, and the panel refreshes by itself.
    page.goto(f"{base}/console/")
    page.wait_for_selector("#chart-throughput g.ok circle")
    assert float(page.locator("#chart-throughput g.ok circle").first.get_attribute("data-value")) >= 1
    assert page.locator("#chart-throughput g.bad circle").count() >= 1
    page.wait_for_selector("#task-totals tr[data-task='add']")
    page.wait_for_selector("#workers td:has-text('idle'), #workers td:has-text('busy')")
    page.wait_for_selector("#overview-panel[data-refreshed]", timeout=15_000)
    _shot(page, "01-overview")

    # Jobs: the filter box finds a job by its argument.
    page.goto(f"{base}/console/jobs")
    # The box suggests terms and their values: "ta" -> task:, "task:needs" -> task:needs_file.
    page.click("#filter")
    page.keyboard.type("ta")
    page.wait_for_selector("#filter-suggestions li:text-is('task:')")
    page.keyboard.press("Tab")
    page.keyboard.type("needs")
    page.wait_for_selector("#filter-suggestions li:text-is('task:needs_file')")
    _shot(page, "02a-jobs-filter-suggestions")
    page.keyboard.press("Tab")
    assert page.input_value("#filter") == "task:needs_file "
    page.fill("#filter", f'state:failure args.path:"{files[1]}"')
    page.press("#filter", "Enter")
    page.wait_for_selector(f"#jobs tr[data-job-id='{failing[1]}']")
    assert page.locator("#jobs tbody tr[data-job-id]").count() == 1
    _shot(page, "02-jobs-filtered")

    # Bulk retry on everything matching, after a confirmation that says how many.
    for f in files:
        f.write_text(f"here now: {f.name}")
    page.goto(f"{base}/console/jobs?q=state:failure task:needs_file")
    page.wait_for_selector("#jobs tbody tr[data-job-id]")
    assert page.locator("#jobs tbody tr[data-job-id]").count() == 3
    asked: list[str] = []

    def accept(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    page.click("button[data-bulk-action='retry']")
    page.wait_for_selector("#bulk-result[data-matched='3']")
    assert asked and asked[0].startswith("Retry 3 jobs matching")
    _shot(page, "03-jobs-bulk-retried")
    for job_id in failing:
        _until(base, job_id, "SUCCESS")

    # Job: its timeline (the failed attempt, the retry, the end), arguments and result.
    page.goto(f"{base}/console/jobs/{failing[0]}")
    page.wait_for_selector("#job-state:text-is('SUCCESS')")
    page.wait_for_selector("#timeline li.ev-success")
    assert "FileNotFoundError" in page.locator("#timeline li.ev-attempt").inner_text()  # the failed run
    page.wait_for_selector(f"#result:has-text('here now: {files[0].name}')")
    _shot(page, "04-job")

    # Queues.
    page.goto(f"{base}/console/queues")
    page.wait_for_selector("#queues tr[data-queue='low']")
    page.wait_for_selector("#chart-queue-default g.ok circle")
    _shot(page, "05-queues")

    # Schedules: the catalogue's periodic jobs with their week.
    page.goto(f"{base}/console/schedules")
    page.wait_for_selector("#schedules tr[data-schedule='health_check']")
    page.click("#schedules tr[data-schedule='health_check'] button:text-is('Pause')")
    page.wait_for_selector("#schedules tr[data-schedule='health_check'][data-paused='true'] .paused")
    _shot(page, "05b-schedules-one-paused")
    # Edit: a cron schedule's zone, saved through the page's form (the API's PATCH).
    row = "#schedules tr[data-schedule='analytics_aggregation']"
    page.click(f"{row} details.edit summary")
    page.fill(f"{row} input[name='timezone']", "America/New_York")
    page.click(f"{row} form button[type='submit']")
    page.wait_for_selector(f"{row} td:text-is('America/New_York')")
    _shot(page, "05c-schedules-edited")

    # Workflow: a node per step, coloured by state; a step's page links to it.
    page.goto(f"{base}/console/jobs/{workflow['job_ids'][-1]}")
    page.click("#workflow-link")
    page.wait_for_selector("svg.workflow")
    assert page.locator("svg.workflow rect.node").count() == 5
    assert page.locator("svg.workflow rect.node.st-SUCCESS").count() == 5
    _shot(page, "06-workflow")

    # A running workflow's graph updates by itself: the slow first step shows running, then every
    # node turns to success without a reload.
    chain = {
        "type": "chain",
        "steps": [
            {"task": "slow_touch", "args": {"path": str(tmp_path / "slow"), "seconds": 3, "steps": 3}},
            {"task": "add", "args": {"x": 1, "y": 1}},
        ],
    }
    running = _post(base, "/api/v1/workflows", chain)
    _until(base, running["job_ids"][0], "STARTED", "PROGRESS")
    page.goto(f"{base}/console/workflows/{running['workflow_id']}")
    page.wait_for_selector("svg.workflow rect.node.st-PROGRESS, svg.workflow rect.node.st-STARTED")
    assert page.locator("svg.workflow rect.node.st-PENDING").count() == 1
    _shot(page, "08-workflow-running")
    page.wait_for_selector("svg.workflow rect.node.st-SUCCESS >> nth=1", timeout=20_000)
    assert page.locator(".live").count() == 0  # finished: the refreshing stopped

    assert operator.errors == [] and operator.external == []
    operator.close()

    # A read-only user sees the same pages without a single action.
    reader = _context(browser, READER)
    page = _page(reader)
    page.goto(f"{base}/console/jobs?q=task:needs_file")
    page.wait_for_selector("#jobs tbody tr[data-job-id]")
    assert page.locator("[data-bulk-action]").count() == 0
    page.goto(f"{base}/console/jobs/{failing[0]}")
    page.wait_for_selector(".who .badge:text-is('read-only')")
    assert page.locator("[data-job-action]").count() == 0
    _shot(page, "07-read-only-job")
    assert reader.errors == [] and reader.external == []
    reader.close()
