"""A worker host cut off, not killed: workers in a network namespace of their own (ip netns, veth),
Redis on the host side; the link is cut in the middle of its job.

The sweep (in the scheduler) re-runs the job on a host worker once the cut-off run's heartbeat
expires; when the link comes back the cut-off worker finds its lease gone, stops its run
(it never writes an outcome over the re-run's) and carries on as a worker.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import make_env
from tests.servers import ROOT, Starter, free_port, redis_binary, stop_processes, wait_for

#: Detection bound the docs state: heartbeat TTL (monitor 5 s + slack 15 s) plus a sweep (5 s).
RESCUE_BOUND = 30.0
TTLS = {"default_result_ttl": 3600, "failure_ttl": 3600}


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def netns() -> Iterator[tuple[str, str, str]]:
    """A network namespace joined to the host by a veth pair: (namespace, host veth, host address)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to make a network namespace")
    tag = uuid.uuid4().hex[:6]
    ns, host_if, ns_if = f"tl-{tag}", f"tlh{tag}", f"tln{tag}"
    octet = int(tag[:2], 16) % 250 + 1
    host_addr, ns_addr = f"10.213.{octet}.1", f"10.213.{octet}.2"
    try:
        _ip("netns", "add", ns)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"ip netns add failed: {exc.stderr.decode().strip()}")
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", ns)
        _ip("addr", "add", f"{host_addr}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("netns", "exec", ns, "ip", "addr", "add", f"{ns_addr}/30", "dev", ns_if)
        _ip("netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, host_if, host_addr
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def _status(conn: redis.Redis, job_id: str) -> bytes | None:
    return conn.hget(f"rq:job:{job_id}", "status")


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.long
@pytest.mark.integration
@pytest.mark.timeout(180)
def test_cut_off_workers_are_fenced_and_their_jobs_rerun_elsewhere(
    netns: tuple[str, str, str], tmp_path: Path
) -> None:
    """Two workers in the namespace each start a job; the link is cut. F's cut-off run ends during
    the cut (its outcome cannot reach Redis); J's is still running when the link returns. Both are
    re-run on a host worker within the bound. When the link returns F's outcome is not written over
    the re-run's, J's run is stopped (it never ends), and both workers carry on taking jobs."""
    ns, host_if, host_addr = netns
    port = free_port()
    server = subprocess.Popen(
        [redis_binary(), "--port", str(port), "--bind", f"127.0.0.1 {host_addr}", "--save", "",
         "--protected-mode", "no", "--dir", str(tmp_path), "--logfile", str(tmp_path / "redis.log")],
    )  # fmt: skip
    conn = redis.Redis(port=port, socket_timeout=5)
    wait_for(lambda: _pings(conn), 10, message="redis-server")
    tasks = "tests.jobs,tests.ha_jobs"
    env = make_env(tmp_path, f"redis://127.0.0.1:{port}/0", TASK_MODULES=tasks, REDIS_TIMEOUT="2")
    start = Starter(env, tmp_path)
    dropped = ("REDIS_", "API_", "APP_ENV", "TASK_MODULES")
    base = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    cut_env = {**base, **env, "REDIS_URL": f"redis://{host_addr}:{port}/0", "HA_SIDE": "cut"}
    cut_logs = [tmp_path / f"cut-worker-{n}.log" for n in range(2)]
    cut = [
        subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "worker.py"],
            cwd=ROOT,
            env=cut_env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        for log in cut_logs
    ]
    out = tmp_path / "runs.txt"
    try:
        wait_for(lambda: conn.scard("rq:workers") >= 2, 30, message="the cut-off workers to register")
        start("scheduler.py")
        import tests.ha_jobs  # noqa: F401  (registers append_line)
        from app.catalogue.registry import REGISTRY
        from app.core.dispatch import enqueue
        from app.core.queues import JsonJob

        spec = REGISTRY.get("append_line")
        assert spec is not None
        ends = enqueue(spec, spec.validate({"path": str(out), "line": "F", "seconds": 5}), conn, **TTLS)
        runs = enqueue(spec, spec.validate({"path": str(out), "line": "J", "seconds": 45}), conn, **TTLS)
        for job in (ends, runs):
            wait_for(lambda j=job: _status(conn, j.id) == b"started", 20, message="the runs in the namespace")

        _ip("link", "set", host_if, "down")
        cut_at = time.monotonic()
        host_worker = start("worker.py", HA_SIDE="host")

        def rerun() -> bool:
            return {"F", "J"} <= set(_lines(out))

        wait_for(rerun, 60, 0.1, "the re-runs on the host worker")
        rescued = time.monotonic() - cut_at
        for job in (ends, runs):
            wait_for(lambda j=job: _status(conn, j.id) == b"finished", 10, message="the re-runs' outcomes")
        assert "F cut" in _lines(out), "F's cut-off run should have ended during the cut"
        _ip("link", "set", host_if, "up")
        restored = time.monotonic()
        logs = lambda: "".join(log.read_text(errors="replace") for log in cut_logs)  # noqa: E731
        wait_for(lambda: f"job {runs.id} lost its lease" in logs(), 30, 0.2, "J's cut-off worker to notice")
        noticed = time.monotonic() - restored
        # Past J's cut-off run's own end (45 s after it started) and F's settling after the outage.
        wait_for(lambda: time.monotonic() - cut_at > 47, 60, 0.5)
        print(
            f"NETSPLIT re-runs {rescued:.1f} s after the cut; the cut-off worker stopped J's run "
            f"{noticed:.1f} s after the link returned; runs: {_lines(out)}"
        )
        assert rescued <= RESCUE_BOUND
        assert sorted(_lines(out)) == ["F", "F cut", "J"], _lines(out)
        for job in (ends, runs):
            assert _status(conn, job.id) == b"finished"
            assert conn.xlen(f"rq:results:{job.id}") == 1, "a second outcome was written"
            assert JsonJob.fetch(job.id, connection=conn).return_value() == f"{job.kwargs['line']}:host"
        assert [p.poll() for p in cut] == [None, None], "a cut-off worker exited"
        start.assert_running(host_worker)
        # They are workers again: stop the host worker and give them jobs.
        stop_processes([host_worker])
        again = [
            enqueue(spec, spec.validate({"path": str(out), "line": f"K{n}", "seconds": 0}), conn, **TTLS)
            for n in range(4)
        ]
        for job in again:
            wait_for(
                lambda j=job: _status(conn, j.id) == b"finished", 30, message="jobs on the rejoined workers"
            )
        assert {f"K{n} cut" for n in range(4)} <= set(_lines(out))
    finally:
        stop_processes(cut, cut_logs)
        start.stop_all()
        server.terminate()
        server.wait(10)


def _pings(conn: redis.Redis) -> bool:
    try:
        return bool(conn.ping())
    except redis.RedisError:
        return False
