"""The rough edges of a new user's first hour (issue 24): scripts/test --help, one control socket per
VAR_DIR, the web process on loopback in development, the first-run seed hint, /readyz after a Redis
restart, ``scheduled_for`` in a job's view, and plain ``flask`` in the project folder."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
import redis
from flask.testing import FlaskClient
from sqlalchemy import create_engine

from app import create_app
from app.foundation import keys
from app.foundation.models import Base
from app.processes.workers import JsonWorker
from app.surfaces.seed import FIRST_RUN_HINT, first_run_hint, seed
from tests.conftest import make_env
from tests.servers import GUNICORN, ROOT, RedisServer, Starter, free_port, wait_for

# --- 1. scripts/test --help ------------------------------------------------------------------------


def test_scripts_test_help_prints_its_usage_at_once() -> None:
    """Its own usage, at once: nothing installed, no linter run; it says where other arguments go."""
    started = time.monotonic()
    done = subprocess.run(["scripts/test", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 2
    assert done.stdout.startswith("usage: scripts/test")
    for example in (
        "scripts/test -k name",
        "scripts/test tests/test_api.py",
        "PYTEST_WORKERS",
        "--pytest-help",
    ):
        assert example in done.stdout
    assert "installing" not in done.stderr


def test_scripts_run_help_prints_its_settings() -> None:
    done = subprocess.run(["scripts/run", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    assert done.returncode == 0 and "VAR_DIR=var2 PORT=5001 scripts/run" in done.stdout
    wrong = subprocess.run(["scripts/run", "--bogus"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    assert (
        wrong.returncode == 2 and wrong.stderr.strip() == "run: unknown argument --bogus (scripts/run --help)"
    )


# --- 2. gunicorn's control socket under VAR_DIR ----------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_two_services_keep_their_own_control_socket(start: Starter, tmp_path: Path) -> None:
    """Two web processes with their own VAR_DIR: each control socket is under its VAR_DIR (none in
    ~/.gunicorn), and stopping one leaves the other's in place."""
    home = tmp_path / "home"
    webs = {}
    for name in ("var1", "var2"):
        port = free_port()
        webs[name] = start(*GUNICORN, f"127.0.0.1:{port}", VAR_DIR=str(tmp_path / name), HOME=str(home))
    sockets = {name: tmp_path / name / "gunicorn.ctl" for name in webs}
    wait_for(lambda: all(s.is_socket() for s in sockets.values()), 20, message="both control sockets")
    webs["var1"].terminate()
    assert start.wait(webs["var1"], 20) == 0
    assert not sockets["var1"].exists()
    assert sockets["var2"].is_socket(), "stopping one service removed the other's control socket"
    assert not (home / ".gunicorn").exists()
    start.assert_running(webs["var2"])


# --- 3. the web process binds 127.0.0.1 in development ---------------------------------------------


def _web_command(**env: str) -> list[str]:
    """The Procfile's web command as the shell expands it with ``env``."""
    line = next(ln for ln in (ROOT / "Procfile").read_text().splitlines() if ln.startswith("web:"))
    command = line.split(":", 1)[1].strip()
    clean = {k: v for k, v in os.environ.items() if k not in ("BIND", "PORT")}
    out = subprocess.run(["sh", "-c", f"printf '%s\\n' {command}"], env={**clean, **env}, capture_output=True,
                         text=True, check=True)  # fmt: skip
    return out.stdout.split()


def test_the_procfile_binds_all_addresses_unless_bind_says_otherwise() -> None:
    """Heroku sets PORT only: 0.0.0.0 there; scripts/run sets BIND=127.0.0.1 in development."""
    assert _web_command(PORT="8123")[-2:] == ["--bind", "0.0.0.0:8123"]
    assert _web_command()[-2:] == ["--bind", "0.0.0.0:5000"]
    assert _web_command(BIND="127.0.0.1", PORT="8124")[-2:] == ["--bind", "127.0.0.1:8124"]
    run = (ROOT / "scripts" / "run").read_text()
    assert "export BIND=${BIND:-127.0.0.1}" in run and "export BIND=${BIND:-0.0.0.0}" in run


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_the_web_process_with_bind_listens_on_loopback_only(start: Starter) -> None:
    port = free_port()
    web = start(*_web_command(BIND="127.0.0.1", PORT=str(port))[1:])

    def listening() -> set[str]:
        start.assert_running(web)
        return {
            c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port
        }

    # With reuse_port each gunicorn worker has a socket of its own: as many listeners as workers have
    # booted, every one of them on loopback.
    assert wait_for(listening, 20, message="gunicorn to listen") == {"127.0.0.1"}


# --- 4. the first-run hint: flask seed -------------------------------------------------------------


def test_the_first_run_hint_shows_while_there_are_no_users(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        assert first_run_hint(engine) == FIRST_RUN_HINT  # no table yet
        Base.metadata.create_all(engine)
        assert first_run_hint(engine) == FIRST_RUN_HINT
        assert "flask seed" in FIRST_RUN_HINT and "send_notification" in FIRST_RUN_HINT
        seed(engine, users=3, hours=0)
        assert first_run_hint(engine) is None
    finally:
        engine.dispose()


def test_the_first_run_hint_command(tmp_path: Path) -> None:
    """What scripts/run calls after the migrations: prints the hint on an empty database, else nothing."""
    env = {**os.environ, "VAR_DIR": str(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"}
    command = [str(ROOT / ".venv" / "bin" / "python"), "-m", "app.surfaces.seed", "--first-run-hint"]
    first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert (first.returncode, first.stdout.strip()) == (0, FIRST_RUN_HINT), first.stderr
    engine = create_engine(env["DATABASE_URL"])
    Base.metadata.create_all(engine)
    seed(engine, users=1, hours=0)
    engine.dispose()
    later = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert (later.returncode, later.stdout) == (0, "")


# --- 5. /readyz after a Redis restart --------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_readyz_waits_for_beats_written_after_a_redis_restart(tmp_path: Path) -> None:
    """Beats kept through a restart (append-only file) were written before the outage: /readyz stays
    503 until a worker and the scheduler beat again, then 200."""
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        app = create_app(make_env(tmp_path, server.url))
        conn: redis.Redis = app.extensions["tasklane"].redis
        worker = JsonWorker(["high"], connection=conn, name="restart-test-worker")
        worker.register_birth()
        worker.heartbeat()
        beat = {"scheduler": "test", "at": datetime.now(UTC).isoformat().replace("+00:00", "Z")}
        conn.set(keys.scheduler_heartbeat(), json.dumps(beat), ex=60)
        web = app.test_client()
        assert web.get("/readyz").status_code == 200
        # Redis's start is known to the second (INFO's uptime), so /readyz allows a second's doubt:
        # the beats must be older than that when it restarts.
        time.sleep(1.2)
        server.stop()
        server.start()
        kept = web.get("/readyz")
        assert kept.status_code == 503, kept.get_json()
        checks = kept.get_json()["checks"]
        assert (checks["workers"]["status"], checks["scheduler"]["status"]) == ("error", "error")
        assert checks["redis"]["status"] == "ok" and conn.exists(worker.key)  # the beats are still there

        worker.heartbeat()
        assert web.get("/readyz").get_json()["checks"]["workers"]["status"] == "ok"
        now = {"scheduler": "test", "at": datetime.now(UTC).isoformat()}
        conn.set(keys.scheduler_heartbeat(), json.dumps(now), ex=60)
        assert web.get("/readyz").status_code == 200
    finally:
        server.stop()


@pytest.mark.integration
@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", ["pooled", "fork"])
def test_an_idle_worker_counts_again_soon_after_a_redis_restart(
    start: Starter, tmp_path: Path, mode: str
) -> None:
    """/readyz ignores beats from before a Redis restart, and does not keep an idle worker out long for
    it: a worker that reconnects beats again as its loop resumes (not 45 s later, its idle beat), so
    the worker check is ok again within seconds, with no job run."""
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        app = create_app(make_env(tmp_path, server.url))
        web = app.test_client()

        def workers_ok() -> bool:
            start.assert_running(worker)
            return bool(web.get("/readyz").get_json()["checks"]["workers"]["status"] == "ok")

        worker = start("worker.py", "high", "--mode", mode, REDIS_URL=server.url)
        wait_for(
            lambda: (start.assert_running(worker), workers_ok())[1], 30, message="the worker's first beat"
        )
        time.sleep(1.2)  # Redis's start is known to the second: the beat must be older than the restart
        server.stop()
        server.start()
        restarted = time.monotonic()
        wait_for(
            lambda: (start.assert_running(worker), workers_ok())[1], 15, message="a beat after the restart"
        )
        assert time.monotonic() - restarted < 15
    finally:
        server.stop()


# --- 6. scheduled_for -------------------------------------------------------------------------------


def test_a_delayed_jobs_view_says_when_it_runs(client: FlaskClient, auth: dict[str, str]) -> None:
    """countdown and eta: ``scheduled_for`` is when it is due (RQ's whole seconds, never early); a job
    queued now has none."""
    sent = datetime.now(UTC)
    delayed = client.post("/api/v1/tasks/add", json={"args": {"x": 1, "y": 2}, "options": {"countdown": 60}},
                          headers=auth).get_json()["job_id"]  # fmt: skip
    eta = (sent + timedelta(hours=2)).replace(microsecond=0)
    body = {"args": {"x": 1, "y": 2}, "options": {"eta": eta.isoformat()}}
    at_eta = client.post("/api/v1/tasks/add", json=body, headers=auth).get_json()["job_id"]
    now = client.post("/api/v1/tasks/add", json={"args": {"x": 1, "y": 2}}, headers=auth).get_json()["job_id"]

    def scheduled_for(job_id: str) -> str | None:
        view = client.get(f"/api/v1/jobs/{job_id}", headers=auth).get_json()
        assert view["state"] == "PENDING"
        return view["scheduled_for"]

    due = datetime.fromisoformat(str(scheduled_for(delayed)).replace("Z", "+00:00"))
    assert sent + timedelta(seconds=60) <= due <= sent + timedelta(seconds=62)
    assert scheduled_for(at_eta) == eta.isoformat().replace("+00:00", "Z")
    assert scheduled_for(now) is None


# --- 7. plain flask in the project folder -----------------------------------------------------------


def test_plain_flask_finds_the_app_in_the_project_folder(tmp_path: Path) -> None:
    """``flask <command>`` needs no ``--app`` in the project folder: the service's commands are there."""
    env = {**os.environ, "VAR_DIR": str(tmp_path), "REDIS_URL": "redis://127.0.0.1:1/0"}
    env.pop("FLASK_APP", None)
    flask = str(ROOT / ".venv" / "bin" / "flask")
    listed = subprocess.run([flask, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    commands = listed.stdout.split("Commands:")[-1]
    for name in ("seed", "tasks", "jobs", "queues", "workers"):
        assert f"\n  {name} " in commands, listed.stdout + listed.stderr
    elsewhere = subprocess.run(
        [flask, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert "\n  seed " not in elsewhere.stdout  # outside it, --app app.factory:create_app (docs say so)


def test_scripts_run_brings_its_embedded_redis_back_and_stops_everything(tmp_path: Path) -> None:
    """./scripts/run as a new user runs it: ready; its embedded Redis killed with kill -9 is started
    again on the same data and the service is ready again by itself; SIGTERM to its process group
    stops every process, the Redis the watcher started included (the stop once left it running)."""
    import shutil
    import signal
    import tempfile

    var = Path(tempfile.mkdtemp(prefix="tl-", dir="/tmp")) / "var"  # a short unix socket path
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "API_TOKENS")}
    env.update(VAR_DIR=str(var), PORT=str(port), BIND="127.0.0.1")
    log = (tmp_path / "run.log").open("wb")
    run = subprocess.Popen(["scripts/run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)  # fmt: skip
    pidfile = var / "redis" / "redis.pid"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    try:
        wait_for(ready, timeout=120, interval=0.5, message="scripts/run's service to be ready")
        first = int(pidfile.read_text())
        token = (var / "dev-api-token").read_text().strip()
        client = redis.Redis(unix_socket_path=str(var / "redis" / "redis.sock"))
        client.set("kept", "yes")
        client.execute_command("BGREWRITEAOF")
        time.sleep(1.2)  # appendfsync everysec: let the write reach the append-only file
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: pidfile.exists() and int(pidfile.read_text()) != first and ready(), timeout=60,
                 interval=0.25, message="the embedded Redis and the service to come back")  # fmt: skip
        again = redis.Redis(unix_socket_path=str(var / "redis" / "redis.sock"))
        assert again.get("kept") == b"yes"
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/tasks/add",
            data=json.dumps({"args": {"x": 2, "y": 3}}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 202
        second = int(pidfile.read_text())
    finally:
        os.killpg(run.pid, signal.SIGTERM)
        try:
            run.wait(timeout=60)
        finally:
            log.close()
    wait_for(lambda: not psutil.pid_exists(second), timeout=15, message="the restarted Redis to stop")
    processes = psutil.process_iter(["pid", "cmdline"])
    left = [p.info for p in processes if str(var) in " ".join(p.info["cmdline"] or ())]

    assert left == [], (left, (tmp_path / "run.log").read_text()[-2000:])
    shutil.rmtree(var.parent, ignore_errors=True)
