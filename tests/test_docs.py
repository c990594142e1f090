"""The README and docs/ stay true: every relative link resolves (anchors too), every command in a
shell block exists, and the blocks marked ``sh live`` run against a live stack (gunicorn + a worker)."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import redis
from flask import Flask
from rq.cli import main as rq_main

from tests.conftest import TOKEN
from tests.servers import ROOT, Starter, start_web, start_worker

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "clients" / "python" / "README.md"]
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)
#: Programs the docs name for other machines (a database server's client, a platform's CLI).
ELSEWHERE = {"heroku", "docker", "systemctl", "createdb", "psql", "mariadb", "gunicornc"}
BUILTINS = {"export", "cd", "source", ".", "set", "echo", "printf", "exit", "test", "["}


def _blocks(page: Path) -> Iterator[tuple[str, str]]:
    for info, body in FENCE.findall(page.read_text()):
        yield info.strip(), body


def _shell_blocks() -> list[tuple[Path, str, str]]:
    return [
        (p, info, body)
        for p in PAGES
        for info, body in _blocks(p)
        if info.split(" ")[:1] in (["sh"], ["bash"])
    ]


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def _links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans
    return re.findall(r"\[[^\]\n]*\]\(([^)\s]+)\)", text)


def test_the_readme_fits_on_a_screen() -> None:
    """At most 200 lines, the two commands first, and a table of the docs pages."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    first = next(body for info, body in _blocks(ROOT / "README.md"))
    assert [line.split()[0] for line in first.splitlines()] == ["./scripts/run", "./scripts/test"]
    for page in ("OPERATIONS", "HTTP_API", "TASKS", "PYTHON", "FLOW_CONTROL", "SCHEDULES", "RELIABILITY",
                 "BENCHMARK", "ARCHITECTURE", "CELERY"):  # fmt: skip
        assert f"(docs/{page}.md)" in readme, page


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in _links(page):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        found = (page.parent / path).resolve() if path else page
        if not found.exists():
            broken.append(f"{target}: no such file")
        elif anchor and found.suffix == ".md" and anchor not in _anchors(found):
            broken.append(f"{target}: no heading with that anchor in {found.name}")
    assert not broken, broken
    assert _links(ROOT / "README.md"), "the link check found no links at all"


def _strip_comments(text: str) -> str:
    """The shell text without its comments (an unquoted ``#`` at a word's start, to the line's end)."""
    out, quote, i = [], "", 0
    while i < len(text):
        char = text[i]
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or text[i - 1] in " \t\n"):
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        out.append(char)
        i += 1
    return "".join(out)


def _commands(body: str) -> Iterator[list[str]]:
    """Each simple command of a shell block, as words (substitutions ``$(...)`` yielded on their own)."""
    text = _strip_comments(re.sub(r"\\\n", " ", body))
    for inner in re.findall(r"\$\(([^()]*)\)", text):
        yield from _commands(inner)
    lexer = shlex.shlex(re.sub(r"\$\([^()]*\)", "X", text), posix=True, punctuation_chars=";&|\n")
    lexer.whitespace = " \t\r"
    lexer.commenters = ""
    lexer.whitespace_split = True
    words: list[str] = []
    for token in lexer:
        if token.strip("\n") in ("", ";", "&&", "||", "|", "&"):
            yield words
            words = []
        else:
            words.append(token)
    yield words


def _problem(words: list[str], cli: click.Group) -> str | None:
    """What is wrong with a command's name (None: it exists)."""
    while words and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        if re.match(r"[A-Za-z_][A-Za-z0-9_]*=\(", words[0]):  # an array: H=(-H "..." -H "...")
            end = next((n for n, w in enumerate(words) if w.endswith(")")), len(words) - 1)
            words = words[end:]
        words = words[1:]  # VAR=value before the command
    if not words or words[0] in BUILTINS | ELSEWHERE:
        return None
    name, rest = words[0], words[1:]
    if rest[:1] == ["--app"]:  # flask --app app.factory:create_app <command>
        rest = rest[2:]
    args = [w for w in rest if not w.startswith(("-", "<", "["))]
    if "/" in name:
        return None if (ROOT / name.removeprefix("./")).exists() else f"{name}: no such file"
    if name in ("python", "python3"):
        if words[1:2] == ["-m"]:
            return None if importlib.util.find_spec(words[2]) else f"python -m {words[2]}: no such module"
        if words[1:2] == ["-c"]:
            return None
        return None if (ROOT / words[1]).exists() else f"python {words[1]}: no such file"
    if name in ("flask", "rq"):
        group: click.Command = cli if name == "flask" else rq_main
        for arg in args[:2]:
            if not isinstance(group, click.Group):
                break
            if arg not in group.commands:
                return f"{name} ... {arg}: no such command"
            group = group.commands[arg]
        return None
    venv = str(ROOT / ".venv" / "bin")
    return None if shutil.which(name, path=f"{venv}:{os.environ['PATH']}") else f"{name}: not installed"


def test_every_shell_block_command_exists(fake_app: Flask) -> None:
    """Each command in a ``sh`` block of the README and docs/: a file of the repository, a module,
    a ``flask`` or ``rq`` command of the service (its sub-command too), or a program on the PATH."""
    builtin = {name: click.Command(name) for name in ("run", "shell", "routes")}
    cli = click.Group(commands={**fake_app.cli.commands, **builtin})
    problems, seen = [], 0
    for page, _info, body in _shell_blocks():
        for words in _commands(body):
            seen += bool(words)
            problem = _problem(words, cli)
            if problem:
                problems.append(f"{page.relative_to(ROOT)}: {problem} ({' '.join(words)})")
    assert not problems, "\n".join(problems)
    assert seen > 20
    assert _problem(["flask", "tasks", "nonsense"], cli) and _problem(["no-such-program"], cli)
    assert _problem(["flask", "--app", "app.factory:create_app", "seed"], cli) is None


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_live_blocks_run_against_a_live_stack(start: Starter, rconn: redis.Redis, tmp_path: Path) -> None:
    """Each ``sh live`` block, as a user would paste it into a shell in the project folder (the token
    and the address are the test service's; ``<job_id>`` is the job the previous call answered), runs
    without an error (curl fails on any HTTP error)."""
    live = [(page, body) for page, info, body in _shell_blocks() if info.split()[1:2] == ["live"]]
    assert len(live) >= 3
    base = start_web(start)
    start_worker(start, rconn, "high", "default", "--mode", "inline")
    last = tmp_path / "last.json"
    prelude = f"""set -euo pipefail
curl() {{ command curl --fail-with-body --show-error --max-time 30 "$@" | tee {last}; echo; }}
last_job() {{ python -c 'import json, sys; print(json.load(open(sys.argv[1]))["job_id"])' {last}; }}
"""
    # TOKEN as README's "Try it" sets it, for the blocks of docs/ that use it
    path = f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"
    env = {**os.environ, **start.env, "TOKEN": TOKEN, "PATH": path}
    env.pop("FLASK_APP", None)
    for page, body in live:
        script = (body.replace("$(cat var/dev-api-token)", TOKEN).replace("http://127.0.0.1:5000", base)
                  .replace("<job_id>", "$(last_job)"))  # fmt: skip
        done = subprocess.run(["bash", "-c", prelude + script], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, (
            f"{page.relative_to(ROOT)}:\n{script}\n{done.stdout[-3000:]}\n{done.stderr}"
        )
        assert '{"error":{"code"' not in done.stdout, done.stdout[-3000:]
