"""The ``tasklane-client`` package (clients/python): built and installed from the repository, then
used against the real service (gunicorn + a worker) from a folder with an ``app`` package of its own."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis
import tasklane_client
from tasklane_client import AsyncTasklane, InvalidArguments, TaskError, Tasklane, TasklaneError

import app.client
from tests.conftest import TOKEN
from tests.servers import Starter, start_web, start_worker

ROOT = Path(__file__).resolve().parent.parent

#: A script of another service: its own ``app`` package, and the client installed beside it.
OTHER_SERVICE = """
import sys
import app                                    # the other service's own package
from tasklane_client import Tasklane

assert app.NAME == "the other service"
tl = Tasklane(sys.argv[1], sys.argv[2])
print(tl.task("add").delay(2, 3).get(timeout=20))
print(tl.chain(tl.task("add").s(2, 2), tl.task("add").s(4)).apply_async().get(timeout=20))
import tasklane_client
print(tasklane_client.__file__)
"""


def test_app_client_is_the_packages_client() -> None:
    """``from app.client import Client`` keeps working: it is the package's ``Client``."""
    assert app.client.Client is tasklane_client.Client
    assert app.client.TasklaneError is tasklane_client.TasklaneError


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_pip_install_from_the_repository_then_call_from_another_service(
    start: Starter, rconn: redis.Redis, tmp_path: Path
) -> None:
    """``pip install ./clients/python`` builds the distribution; a script in a folder whose own ``app``
    package would hide ours calls the service through it."""
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
         "./clients/python"],
        cwd=ROOT, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    assert (target / "tasklane_client" / "py.typed").is_file()
    metadata = next(target.glob("tasklane_client-*.dist-info"))
    assert "Requires-Dist: httpx" in (metadata / "METADATA").read_text()

    base = start_web(start)
    start_worker(start, rconn, "default", "--mode", "inline")
    service = tmp_path / "other-service"
    (service / "app").mkdir(parents=True)
    (service / "app" / "__init__.py").write_text('NAME = "the other service"\n')
    (service / "call.py").write_text(textwrap.dedent(OTHER_SERVICE))
    env = {**os.environ, "PYTHONPATH": str(target)}
    command = [sys.executable, "call.py", base, TOKEN]
    ran = subprocess.run(command, cwd=service, env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    five, eight, where = ran.stdout.split()
    assert (five, eight) == ("5", "8")
    assert Path(where).is_relative_to(target)  # the built copy, not the repository's source


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_celery_shaped_calls_against_the_real_api(start: Starter, rconn: redis.Redis) -> None:
    """delay/get, a failure raised, 422s as ValueErrors, revoke, chain/group/chord, the asyncio twin."""
    base = start_web(start)
    start_worker(start, rconn, "default", "--mode", "inline")
    with Tasklane(base, TOKEN) as tl:
        add = tl.task("add")
        result = add.delay(2, 3)
        assert result.get(timeout=20) == 5
        assert result.successful() and result.state == "SUCCESS"

        failed = tl.task("always_fail").delay("boom")
        with pytest.raises(TaskError) as caught:
            failed.get(timeout=20)
        assert "boom" in caught.value.message and failed.failed()

        with pytest.raises(InvalidArguments) as invalid:
            add.delay("two", 3)
        assert isinstance(invalid.value, ValueError)
        assert invalid.value.details[0]["field"] == "args.x"
        with pytest.raises(TasklaneError) as unknown:
            tl.task("no_such_task").delay(x=1)
        assert (unknown.value.status, unknown.value.code) == (404, "unknown_task")

        # positional arguments follow the input model's field order, as the catalogue lists it
        assert tl.fields("send_notification") == ["user_id", "message", "channel"]

        later = add.apply_async((1, 1), countdown=60)
        later.revoke()
        assert later.state == "REVOKED"

        assert tl.chain(add.s(2, 2), add.s(4), add.si(1, 1)).apply_async().get(timeout=20) == 2
        assert tl.group(add.s(1, 1), add.s(2, 2)).apply_async().get(timeout=20) == [2, 4]
        header = tl.group(add.s(1, 2), add.s(3, 4))
        assert tl.chord(header, tl.task("xsum").s()).apply_async().get(timeout=20) == 10

    async def twin() -> None:
        async with AsyncTasklane(base, TOKEN) as atl:
            job = await atl.task("add").delay(20, 22)
            assert await job.get(timeout=20) == 42
            flow = await atl.chain(atl.task("add").s(1, 1), atl.task("add").s(1)).apply_async()
            assert await flow.get(timeout=20) == 3

    asyncio.run(twin())
