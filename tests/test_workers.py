"""The startup check's memory (workers.py): markers of masters no longer running go away.

A gunicorn master writes one marker per checked configuration; before this, a host that
restarted its service many times kept one empty file per old master in the temp dir.
Real processes, real /proc: a finished child's pid is a master that is gone.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pyramid_redisx import workers
from pyramid_redisx.settings import parse_client


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    path = Path(workers.marker_dir())
    path.mkdir(mode=0o700)
    return path


def finished_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_prune_removes_the_markers_of_masters_that_are_gone(folder: Path) -> None:
    me = os.getpid()
    start = workers.started(me)
    assert start is not None and start.isdigit()
    dead = finished_pid()
    assert workers.started(dead) is None  # reaped: no /proc entry
    live = f"{me}-{start}-0123456789abcdef"
    gone = f"{dead}-{start}-0123456789abcdef"
    reused = f"{me}-{int(start) + 1}-0123456789abcdef"  # this pid, another process's start
    other = "notes.txt"
    for name in (live, gone, reused, other):
        (folder / name).touch()

    assert sorted(workers.prune(str(folder))) == sorted([gone, reused])
    assert sorted(os.listdir(folder)) == sorted([live, other])
    assert workers.prune(str(folder)) == []  # nothing more to remove
    assert workers.prune(str(folder / "missing")) == []


def test_a_worker_marks_its_check_and_clears_dead_masters(folder: Path) -> None:
    """A fork of this process (a worker of this "master") marks its check: the marker is
    named after this process, and the dead master's marker is gone."""
    options = parse_client("default", {"redis.url": "redis://127.0.0.1:6399/0"})
    dead = f"{finished_pid()}-{workers.started(os.getpid())}-0123456789abcdef"
    (folder / dead).touch()

    pid = os.fork()
    if pid == 0:  # the worker
        code = 1
        try:
            workers.mark_checked(options)
            code = 0 if workers.replaces_a_worker(options) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    names = os.listdir(folder)
    assert len(names) == 1 and names[0].startswith(f"{os.getpid()}-{workers.started(os.getpid())}-")
    assert "6399" not in names[0]  # a digest, not the settings
    assert not workers.replaces_a_worker(options)  # this process is no fork of its parent


def stat_start(pid: int) -> str:
    """Field 22 of /proc/<pid>/stat, read as bytes: the comm field may hold anything."""
    data = Path(f"/proc/{pid}/stat").read_bytes()
    return data[data.rindex(b")") + 2 :].split()[19].decode()


def test_start_time_of_a_process_with_an_awkward_name(tmp_path: Path) -> None:
    """A master's name (comm) may hold spaces, parentheses and non-ASCII letters: the start
    time is still field 22, counted after the last ')'."""
    link = tmp_path / "ö) 1 2 (x"
    link.symlink_to(sys.executable)
    child = subprocess.Popen([str(link), "-c", "import time; time.sleep(30)"])
    try:
        assert b"\xc3\xb6) 1 2 (x" in Path(f"/proc/{child.pid}/stat").read_bytes()
        assert workers.started(child.pid) == stat_start(child.pid)
        assert workers.started(os.getpid()) == stat_start(os.getpid())
        assert int(stat_start(child.pid)) >= int(stat_start(os.getpid()))
    finally:
        child.kill()
        child.wait()
    assert workers.started(child.pid) is None


def test_prune_keeps_what_is_not_a_gone_masters_marker(folder: Path) -> None:
    dead = finished_pid()
    start = workers.started(os.getpid())
    keep = [f"note-{i}.txt" for i in range(20)] + [f"{dead}-notatime-x", "12-"]
    for name in keep:
        (folder / name).touch()
    gone = [f"{dead}-{start}-0123456789abcdef", f"{dead}-{start}-ab-cd"]
    for name in gone:
        (folder / name).touch()
    (folder / f"{dead}-{start}-directory").mkdir()  # cannot be unlinked: left, no error

    assert sorted(workers.prune(str(folder))) == sorted(gone)
    assert sorted(os.listdir(folder)) == sorted([*keep, f"{dead}-{start}-directory"])


def test_markers_differ_by_options_and_name_no_password(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In this process (mutmut traces no forked child), with this process standing in
    for the master: the marker names the master and a digest of the redacted options."""
    me = (os.getpid(), workers.started(os.getpid()))
    monkeypatch.setattr(workers, "master", lambda: me)
    one = parse_client("default", {"redis.url": "redis://:hunter2@127.0.0.1:6399/0"})
    other = parse_client("default", {"redis.url": "redis://:hunter2@127.0.0.1:6399/1"})
    same = parse_client("default", {"redis.url": "redis://:swordfish@127.0.0.1:6399/0"})
    paths = [workers.marker(options) for options in (one, other, same)]
    assert all(path is not None for path in paths)
    names = [os.path.basename(str(path)) for path in paths]
    assert all(re.fullmatch(rf"{me[0]}-{me[1]}-[0-9a-f]{{16}}", name) for name in names), names
    assert names[0] != names[1]
    assert names[0] == names[2]  # the password is not part of what is compared

    dead = f"{finished_pid()}-{me[1]}-0123456789abcdef"
    (folder / dead).touch()
    assert not workers.replaces_a_worker(one)
    workers.mark_checked(one)
    assert workers.replaces_a_worker(one) and not workers.replaces_a_worker(other)
    assert sorted(os.listdir(folder)) == [names[0]]  # the dead master's marker went
    assert (folder.stat().st_mode & 0o777) == 0o700


def test_an_unwritable_marker_folder_means_every_boot_is_a_first_boot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    Path(workers.marker_dir()).write_text("a file where the folder should be")
    monkeypatch.setattr(workers, "master", lambda: (os.getpid(), "1"))
    options = parse_client("default", {"redis.url": "redis://127.0.0.1:6399/0"})
    workers.mark_checked(options)  # no error: the check passed, that is what counts
    assert not workers.replaces_a_worker(options)


def test_a_fresh_marker_folder_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    me = (os.getpid(), workers.started(os.getpid()))
    monkeypatch.setattr(workers, "master", lambda: me)
    options = parse_client("default", {"redis.url": "redis://127.0.0.1:6399/0"})
    workers.mark_checked(options)
    workers.mark_checked(options)  # a second worker: the folder exists already
    assert (Path(workers.marker_dir()).stat().st_mode & 0o777) == 0o700
    assert workers.replaces_a_worker(options)
