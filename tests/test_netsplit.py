"""A worker host cut off, not killed: a worker in a network namespace of its own (ip netns, veth),
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


@pytest.mark.long
@pytest.mark.integration
@pytest.mark.timeout(150)
def test_cut_off_worker_is_fenced_and_its_job_rerun_elsewhere(
    netns: tuple[str, str, str], tmp_path: Path
) -> None:
    ns, host_if, host_addr = netns
    port = free_port()
    server = subprocess.Popen(
        [redis_binary(), "--port", str(port), "--bind", f"127.0.0.1 {host_addr}", "--save", "",
         "--protected-mode", "no", "--dir", str(tmp_path), "--logfile", str(tmp_path / "redis.log")],
    )  # fmt: skip
    conn = redis.Redis(port=port, socket_timeout=5)
    wait_for(lambda: _pings(conn), 10, message="redis-server")
    env = make_env(
        tmp_path, f"redis://127.0.0.1:{port}/0", TASK_MODULES="tests.jobs,tests.ha_jobs", REDIS_TIMEOUT="2"
    )
    start = Starter(env, tmp_path)
    cut_log = tmp_path / "cut-worker.log"
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "API_", "APP_ENV", "TASK_MODULES"))
    }
    cut_env = {**base, **env, "REDIS_URL": f"redis://{host_addr}:{port}/0", "HA_SIDE": "cut"}
    cut = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "worker.py"],
        cwd=ROOT, env=cut_env, stdout=cut_log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    out = tmp_path / "runs.txt"
    try:
        wait_for(lambda: conn.scard("rq:workers") >= 1, 30, message="the cut-off worker to register")
        start("scheduler.py")
        import tests.ha_jobs  # noqa: F401  (registers append_line)
        from app.dispatch import enqueue
        from app.registry import REGISTRY

        spec = REGISTRY.get("append_line")
        assert spec is not None
        job = enqueue(spec, spec.validate({"path": str(out), "line": "J", "seconds": 40}), conn, **TTLS)
        wait_for(
            lambda: conn.hget(f"rq:job:{job.id}", "status") == b"started",
            20,
            message="the run in the namespace",
        )

        _ip("link", "set", host_if, "down")
        cut_at = time.monotonic()
        host_worker = start("worker.py", HA_SIDE="host")
        wait_for(
            lambda: out.exists() and "J" in out.read_text().split(), 60, 0.1, "the re-run on the host worker"
        )
        rescued = time.monotonic() - cut_at
        wait_for(
            lambda: conn.hget(f"rq:job:{job.id}", "status") == b"finished", 10, message="the re-run's outcome"
        )
        _ip("link", "set", host_if, "up")
        restored = time.monotonic()
        wait_for(
            lambda: "lost its lease" in cut_log.read_text(errors="replace"),
            30,
            0.2,
            "the cut-off worker to notice",
        )
        noticed = time.monotonic() - restored
        # Past the cut-off run's own end (40 s after it started): it never wrote a line or an outcome.
        wait_for(lambda: time.monotonic() - cut_at > 42, 60, 0.5)
        print(
            f"NETSPLIT re-run {rescued:.1f} s after the cut; "
            f"the cut-off worker dropped its run {noticed:.1f} s after the link returned"
        )
        assert rescued <= RESCUE_BOUND
        assert out.read_text().split("\n")[:-1] == ["J"], out.read_text()
        assert conn.hget(f"rq:job:{job.id}", "status") == b"finished"
        assert conn.xlen(f"rq:results:{job.id}") == 1
        assert cut.poll() is None, "the cut-off worker exited"
        start.assert_running(host_worker)
        # It is a worker again: stop the host worker and give it a job.
        stop_processes([host_worker])
        again = enqueue(spec, spec.validate({"path": str(out), "line": "K", "seconds": 0}), conn, **TTLS)
        wait_for(
            lambda: conn.hget(f"rq:job:{again.id}", "status") == b"finished",
            30,
            message="a job on the rejoined worker",
        )
        assert "K cut" in out.read_text()
    finally:
        stop_processes([cut], [cut_log])
        start.stop_all()
        server.terminate()
        server.wait(10)


def _pings(conn: redis.Redis) -> bool:
    try:
        return bool(conn.ping())
    except redis.RedisError:
        return False
