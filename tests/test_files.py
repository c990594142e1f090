"""The input-file policy: only regular files below INPUT_DIRS, no '..', no symlink escape, no
devices or FIFOs, nothing over INPUT_MAX_BYTES; 422 at the API."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from app.foundation.config import Settings
from app.services.files import PathRefused, check_input, open_input
from tests.conftest import make_env
from tests.servers import invalid_fields


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    (d / "ok.txt").write_text("hello")
    (tmp_path / "secret.txt").write_text("secret")
    return d


@pytest.fixture
def settings(tmp_path: Path, inputs: Path) -> Settings:
    return Settings.from_env(
        make_env(tmp_path, "redis://x:1/0", INPUT_DIRS=str(inputs), INPUT_MAX_BYTES="100")
    )


def test_accepts_a_file_below_an_input_dir(inputs: Path, settings: Settings) -> None:
    """A relative path is below the first input dir; an absolute one is accepted as it is."""
    assert check_input("ok.txt", settings) == (inputs / "ok.txt").resolve()
    assert check_input(str(inputs / "ok.txt"), settings) == (inputs / "ok.txt").resolve()
    with open_input("ok.txt", settings) as fh:
        assert fh.read() == b"hello"


def test_refuses_what_the_policy_forbids(tmp_path: Path, inputs: Path, settings: Settings) -> None:
    """Outside, '..', a symlink escaping, a FIFO, a device, a directory, too large, missing: refused."""
    (inputs / "link.txt").symlink_to(tmp_path / "secret.txt")
    os.mkfifo(inputs / "fifo")
    (inputs / "dev").symlink_to("/dev/zero")
    (inputs / "big.txt").write_bytes(b"x" * 101)
    (inputs / "sub").mkdir()
    cases = {
        str(tmp_path / "secret.txt"): "not below",
        "../secret.txt": "'..'",
        f"{inputs}/../secret.txt": "'..'",
        "link.txt": "outside INPUT_DIRS",
        "fifo": "not a regular file",
        "dev": "outside INPUT_DIRS",
        "big.txt": "INPUT_MAX_BYTES",
        "sub": "directory",
        "missing.txt": "does not exist",
        "": "empty",
    }
    for raw, reason in cases.items():
        with pytest.raises(PathRefused, match=reason):
            check_input(raw, settings)
    with pytest.raises(PathRefused, match="not a regular file"):
        check_input("/dev/null", Settings.from_env(make_env(tmp_path, "redis://x:1/0", INPUT_DIRS="/dev")))


def test_at_validation_a_missing_file_passes_only_where_its_input_dir_is_not_on_this_host(
    tmp_path: Path, inputs: Path, settings: Settings
) -> None:
    """The API checks a missing file when it can: its input directory is here, so it is refused;
    an input directory this host lacks (a worker's mount) leaves the check to the worker."""
    with pytest.raises(PathRefused, match="does not exist"):
        check_input("missing.png", settings, must_exist=False)
    elsewhere = tmp_path / "on-the-workers"
    remote = Settings.from_env(make_env(tmp_path, "redis://x:1/0", INPUT_DIRS=f"{inputs}:{elsewhere}"))
    assert check_input(f"{elsewhere}/x.png", remote, must_exist=False) == elsewhere / "x.png"
    with pytest.raises(PathRefused, match="does not exist"):
        check_input(f"{elsewhere}/x.png", remote)  # the worker's check


def test_open_refuses_a_symlink_swapped_in(inputs: Path, tmp_path: Path, settings: Settings) -> None:
    """The file is opened without following a symlink, so one that replaced it after the check loses."""
    target = check_input("ok.txt", settings)
    target.unlink()
    target.symlink_to(tmp_path / "secret.txt")
    with pytest.raises(PathRefused):
        open_input("ok.txt", settings)


@pytest.fixture
def env(tmp_path: Path, redis_url: str, inputs: Path) -> dict[str, str]:
    return make_env(tmp_path, redis_url, INPUT_DIRS=str(inputs))


@pytest.mark.parametrize(
    ("task", "args", "fields"),
    [
        ("process_large_file", {"path": "../x.csv"}, ["args.path"]),
        ("process_large_file", {"path": "/etc/passwd"}, ["args.path"]),
        ("file_ingestion", {"file_paths": ["ok.txt", "/etc/hosts"]}, ["args.file_paths.1"]),
        ("extract_text", {"path": "/dev/zero"}, ["args.path"]),
        ("process_video", {"path": "/proc/self/environ"}, ["args.path"]),
        ("resize_image", {"path": "ok.txt", "sizes": [0, 100000]}, ["args.sizes"]),
        ("resize_image", {"path": "ok.txt", "sizes": []}, ["args.sizes"]),
        # a missing file below an input directory this host has (issue 21, loose end 4)
        ("resize_image", {"path": "missing.png", "sizes": [100]}, ["args.path"]),
        ("process_large_file", {"path": "gone/missing.csv"}, ["args.path"]),
    ],
)
def test_api_answers_422(
    client: FlaskClient, auth: dict[str, str], task: str, args: dict[str, object], fields: list[str]
) -> None:
    """A path the policy refuses, or bad sizes, are field errors of a 422 before anything is enqueued."""
    assert invalid_fields(client, auth, task, args) == fields
