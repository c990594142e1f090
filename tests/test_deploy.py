"""Deployment files stay in step with the Procfile, and the README's catalogue table with the registry."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import yaml

from app.surfaces import catalogue_table
from tests.servers import ROOT


def procfile() -> dict[str, str]:
    """The Procfile's processes and their commands."""
    out = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            out[name.strip()] = command.strip()
    return out


def _argv(command: str) -> list[str]:
    """A command's words, with the web process's address left out (each deployment binds its own)."""
    words = shlex.split(command)
    if "--bind" in words:
        at = words.index("--bind")
        del words[at : at + 2]
    return words


RUNNING = sorted(set(procfile()) - {"release"})


def test_procfile_has_the_processes_of_the_operator_contract() -> None:
    """web, worker, worker_isolated, scheduler and release (migrations)."""
    assert RUNNING == ["scheduler", "web", "worker", "worker_isolated"]
    assert procfile()["release"] == "alembic upgrade head"


def test_local_runs_start_every_process_but_release() -> None:
    """scripts/run and docs/OPERATIONS.md's commands name every process of the Procfile but release (which
    exits once the migrations are done: honcho would then stop everything, app.localrun restart it)."""
    run = (ROOT / "scripts" / "run").read_text()
    readme = (ROOT / "docs" / "OPERATIONS.md").read_text()
    for text in (run, readme):
        lines = [
            line
            for line in text.splitlines()
            if re.search(r"(honcho start|app\.processes\.localrun)\b[^#]* web\b", line)
        ]
        assert lines, "no honcho start or app.processes.localrun line"
        for line in lines:
            named = re.findall(r"\b(web|worker_isolated|worker|scheduler|release)\b", line.split("#")[0])
            assert sorted(named) == RUNNING, line


def test_app_json_is_a_heroku_manifest_for_the_procfile() -> None:
    """app.json: the Redis and PostgreSQL add-ons, production settings with generated secrets,
    REDIS_TLS_VERIFY=none for Heroku Redis, and a formation of every running process."""
    manifest = json.loads((ROOT / "app.json").read_text())
    plans = [addon["plan"].split(":")[0] for addon in manifest["addons"]]
    assert plans == ["heroku-redis", "heroku-postgresql"]
    env = manifest["env"]
    assert env["APP_ENV"]["value"] == "production"
    assert env["API_TOKENS"]["generator"] == "secret" and env["DASHBOARD_PASSWORD"]["generator"] == "secret"
    assert env["REDIS_TLS_VERIFY"]["value"] == "none"
    assert sorted(manifest["formation"]) == RUNNING
    config = (ROOT / "app" / "foundation" / "config.py").read_text() + (ROOT / "gunicorn.conf.py").read_text()
    for name in env:
        assert f'"{name}"' in config, f"app.json sets {name}, which no process reads"


def test_docker_compose_runs_the_procfile_with_a_real_redis() -> None:
    """docker-compose.yml: redis (append-only) and postgres, the release once, and each Procfile
    process with its Procfile command."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["redis"]["image"].startswith("redis:") and "--appendonly" in services["redis"]["command"]
    assert services["release"]["command"] == shlex.split(procfile()["release"])
    for name in RUNNING:
        assert _argv(" ".join(services[name]["command"])) == _argv(procfile()[name]), name
        assert services[name]["depends_on"]["release"] == {"condition": "service_completed_successfully"}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install -r requirements.txt" in dockerfile and "web.py" in dockerfile


def test_systemd_units_run_the_procfile_commands() -> None:
    """Each unit's ExecStart is its Procfile command, from the project's .venv."""
    units = {
        "release": "tasklane-release.service",
        "web": "tasklane-web.service",
        "worker": "tasklane-worker@.service",
        "worker_isolated": "tasklane-worker-isolated.service",
        "scheduler": "tasklane-scheduler.service",
    }
    assert sorted(units) == sorted(procfile())
    for process, unit in units.items():
        text = (ROOT / "docs" / "deploy" / "systemd" / unit).read_text()
        exec_start = re.search(r"^ExecStart=(.+)$", text, re.M)
        assert exec_start, unit
        argv = _argv(exec_start.group(1))
        argv[0] = argv[0].removeprefix("/opt/tasklane/.venv/bin/")
        assert argv == _argv(procfile()[process]), unit
        assert "EnvironmentFile=/etc/tasklane/tasklane.env" in text


def test_readme_catalogue_table_is_current(tmp_path: Path) -> None:
    """docs/TASKS.md's catalogue table is what `python -m app.surfaces.catalogue_table` writes."""
    assert catalogue_table.main(["--check"]) == 0, "run: python -m app.surfaces.catalogue_table"
    readme = (ROOT / "docs" / "TASKS.md").read_text()
    assert "| `add` | x, y | default |" in readme
    stale = tmp_path / "README.md"
    stale.write_text(readme.replace("| `add` | x, y |", "| `add` | x |"))
    assert catalogue_table.main(["--check", "--readme", str(stale)]) == 1
    assert catalogue_table.main(["--readme", str(stale)]) == 0
    assert stale.read_text() == readme
