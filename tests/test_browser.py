"""The dashboard and /docs in a real headless chromium, against real gunicorn, workers and Redis.

Screenshots are saved under $TEST_ARTIFACTS_DIR (default tests/artifacts/).
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
EVIL = "<img src=x onerror=window.__xss=1>"


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


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A page logged in to the dashboard; any request off this machine is aborted and recorded."""
    context = browser.new_context(
        http_credentials={"username": DASHBOARD[0], "password": DASHBOARD[1]},
        viewport={"width": 1280, "height": 900},
    )
    context.external = []  # type: ignore[attr-defined]

    def only_local(route: Any) -> None:
        host = urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "evil.test"):
            route.continue_() if host == "127.0.0.1" else route.fallback()
        else:
            context.external.append(route.request.url)  # type: ignore[attr-defined]
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


def _shot(page: Any, name: str, full_page: bool = True) -> None:
    page.screenshot(path=str(artifacts_dir() / f"{name}.png"), full_page=full_page)


def _post(base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = requests.post(f"{base}{path}", json=body, headers=AUTH, timeout=10)
    assert response.status_code == 202, response.text
    return dict(response.json())


def _state(base: str, job_id: str) -> str:
    return str(requests.get(f"{base}/api/v1/jobs/{job_id}", headers=AUTH, timeout=10).json()["state"])


def _until(base: str, job_id: str, *states: str, timeout: float = 30) -> None:
    wait_for(lambda: _state(base, job_id) in states, timeout, 0.1, f"job {job_id} to be {states}")


def test_dashboard_in_a_real_browser(page: Any, start: Starter, rconn: redis.Redis, tmp_path: Path) -> None:
    """Logged in, the operator sees every queue before any job, a finished, a failed and a running
    job with readable arguments (and a chained step's received value); a cross-site page cannot
    requeue; the dashboard's own Requeue button can, and the job then succeeds. Arguments that
    carry HTML are shown as text, never run."""
    base = start_web(start)
    start_worker(start, rconn, "default", "--mode", "inline")
    start_worker(start, rconn, "low", "--mode", "fork")

    page.goto(f"{base}/rq/")
    page.wait_for_selector("#queues td:text-is('low')")
    names = page.locator("#queues tbody tr td:first-child").all_inner_texts()
    assert sorted(n.strip() for n in names) == ["default", "high", "low"]
    _shot(page, "dashboard-01-queues-before-any-job")

    done = _post(base, "/api/v1/tasks/add", {"args": {"x": 2, "y": 3}})["job_id"]
    missing = tmp_path / "needed.txt"
    failing = _post(base, "/api/v1/tasks/needs_file", {"args": {"path": str(missing)}})["job_id"]
    evil = _post(base, "/api/v1/tasks/always_fail", {"args": {"message": EVIL}})["job_id"]
    chain = {
        "type": "chain",
        "steps": [{"task": "add", "args": {"x": 1, "y": 1}}, {"task": "add", "args": {"y": 5}}],
    }
    step = _post(base, "/api/v1/workflows", chain)["job_ids"][1]
    running = _post(
        base,
        "/api/v1/tasks/slow_touch",
        {"args": {"path": str(tmp_path / "slow"), "seconds": 30, "steps": 30}, "options": {"queue": "low"}},
    )["job_id"]
    _until(base, done, "SUCCESS")
    _until(base, step, "SUCCESS")
    _until(base, failing, "FAILURE")
    _until(base, evil, "FAILURE")
    _until(base, running, "STARTED", "PROGRESS")

    page.goto(f"{base}/rq/0/view/jobs/default/finished/20/asc/1")
    page.wait_for_selector("#jobs .description:text-is('add(x=2, y=3)')")
    page.wait_for_selector("#jobs .description:text-is('add(x=2, y=5)')")
    _shot(page, "dashboard-02-finished")

    page.goto(f"{base}/rq/0/view/jobs/low/started/20/asc/1")
    page.wait_for_selector(f"#jobs tr[data-job-id='{running}'] .description:has-text('slow_touch(path=')")
    _shot(page, "dashboard-03-running")
    page.goto(f"{base}/rq/0/view/workers")
    page.wait_for_selector("#workers a:has-text('slow_touch(')")
    _shot(page, "dashboard-04-workers")

    page.goto(f"{base}/rq/0/view/jobs/default/failed/20/asc/1")
    row = page.locator(f"#jobs tr[data-job-id='{failing}']")
    row.locator(".description", has_text=f'needs_file(path="{missing}")').wait_for()
    page.locator(f"#jobs tr[data-job-id='{evil}'] .description", has_text=EVIL).wait_for()
    assert page.evaluate("window.__xss") is None
    _shot(page, "dashboard-05-failed")

    page.goto(f"{base}/rq/0/view/job/{evil}")
    page.wait_for_selector(f".description-scroll:has-text('{EVIL}')")
    page.wait_for_selector(".exc_info:has-text('RuntimeError')")
    assert page.evaluate("window.__xss") is None
    _shot(page, "dashboard-06-job-with-html-in-its-arguments")

    page.goto(f"{base}/rq/0/view/job/{step}")
    page.wait_for_selector(".description-scroll:text-is('add(x=2, y=5)')")
    _shot(page, "dashboard-07-chained-step")

    # A page of another site, which the operator's browser also sends the credentials from.
    page.route(
        "http://evil.test/**",
        lambda route: route.fulfill(
            content_type="text/html",
            body=f"<form id=f method=post action='{base}/rq/job/{failing}/requeue'></form>"
            "<script>document.getElementById('f').submit()</script>",
        ),
    )
    with page.expect_response(f"{base}/rq/job/{failing}/requeue") as answer:
        page.goto("http://evil.test/attack")
    assert answer.value.status == 403
    assert _state(base, failing) == "FAILURE"

    missing.write_text("here now")
    page.goto(f"{base}/rq/0/view/jobs/default/failed/20/asc/1")
    with page.expect_response(f"{base}/rq/job/{failing}/requeue") as answer:
        row.locator("[data-role=requeue-job-btn]").click()
    assert answer.value.status == 200
    _until(base, failing, "SUCCESS")
    page.goto(f"{base}/rq/0/view/jobs/default/finished/20/asc/1")
    page.wait_for_selector(f"#jobs tr[data-job-id='{failing}']")
    page.goto(f"{base}/rq/0/view/job/{failing}")
    page.wait_for_selector(".description-scroll:has-text('needs_file(')")
    page.wait_for_selector("pre:has-text('here now')")
    _shot(page, "dashboard-08-requeued-and-succeeded")

    assert page.context.external == []
    requests.delete(f"{base}/api/v1/jobs/{running}", headers=AUTH, timeout=10)


def test_docs_page_works_offline(page: Any, start: Starter) -> None:
    """/docs renders Swagger UI with every task's operation, loading nothing from off this machine."""
    base = start_web(start)
    page.goto(f"{base}/docs")
    # Tags start collapsed (docExpansion none): expanded at once, Swagger UI stopped listing
    # operations after the twelfth once the catalogue passed about 140 of them.
    page.wait_for_selector(".opblock-tag[data-tag='jobs']")
    for tag in ("tasks", "jobs"):
        page.locator(f".opblock-tag[data-tag='{tag}']").click()
    page.wait_for_selector(".opblock-summary-path[data-path='/api/v1/tasks/add']")
    page.wait_for_selector(".opblock-summary-path[data-path='/api/v1/jobs/{job_id}']")
    last = page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.dataset.path)")
    assert "/api/v1/tasks/send_notification" in last, last[-5:]  # every task listed, not the first few
    assert "Tasklane" in page.locator(".info .title").inner_text()
    page.locator(".opblock-summary-path[data-path='/api/v1/tasks/add']").click()
    page.wait_for_selector("text=Policy in force")
    page.locator(".opblock-summary-path[data-path='/api/v1/tasks/add']").scroll_into_view_if_needed()
    _shot(page, "docs-01-swagger-ui", full_page=False)
    assert page.context.external == []
