"""A worker that replaces another is not a first deployment: the startup check's memory.

The startup check fails fast (``RedisUnavailable``) so that a deployment with a wrong URL
or an unreachable Redis never starts. But a pre-fork server (gunicorn without
``--preload``, uWSGI with ``lazy-apps``) runs the app's startup in every worker it boots,
also in one that replaces a worker that died or was recycled (``max_requests``, an OOM
kill); if Redis is down at that moment, the failed check made that worker exit, and
gunicorn then shuts the whole service down ("Worker failed to boot").

So a successful check leaves a marker keyed by the master: its pid and start time (a
reused pid never matches), and a digest of the checked options (redacted: no password
goes into it). A later worker of the same master whose check fails finds the marker and
comes up anyway, with a WARNING: the circuit breaker and the health view carry the
outage. A first boot, a changed configuration (a reload with a new URL) or another master
finds none and fails fast as before.

"The master" is the parent process only when this process is a fork of it, not a
program it started: the same executable (``/proc/<pid>/exe``) and the same auxiliary
vector (``/proc/<pid>/auxv``, which a fork copies and a new program gets anew, with its
randomized addresses). So an app started by a shell, systemd, a supervisor or a test
runner always fails fast. Needs ``/proc`` (Linux); elsewhere every boot is a first boot. Markers are empty files in
``<tmp>/pyramid_redisx-boot-<uid>/`` (mode 0700); each new marker removes those of masters
that are no longer running (pid gone, or reused by a process with another start time), so
the folder holds the markers of live masters only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile

from .settings import RedisOptions


def marker_dir() -> str:
    return os.path.join(tempfile.gettempdir(), f"pyramid_redisx-boot-{os.getuid()}")


def master() -> tuple[int, str] | None:
    """(pid, start time) of the parent when this process is a fork of it, else None."""
    parent = os.getppid()
    try:
        if os.readlink(f"/proc/{parent}/exe") != os.readlink("/proc/self/exe"):
            return None
        if _read(f"/proc/{parent}/auxv") != _read("/proc/self/auxv"):
            return None  # the same program started anew (exec), not a fork
    except OSError:
        return None
    start = started(parent)  # in clock ticks after boot
    return None if start is None else (parent, start)


def started(pid: int) -> str | None:
    """The start time of process ``pid`` (field 22 of proc(5)), or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def prune(folder: str) -> list[str]:
    """Remove the markers in ``folder`` whose master is no longer running; their names."""
    removed: list[str] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        pid, _, rest = name.partition("-")
        start, _, _ = rest.partition("-")
        if not pid.isdigit() or not start.isdigit():
            continue  # not a marker: not ours to remove
        if started(int(pid)) != start:
            with contextlib.suppress(OSError):  # another worker removed it first
                os.unlink(os.path.join(folder, name))
                removed.append(name)
    return removed


def _read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def marker(options: RedisOptions) -> str | None:
    """The marker's path for ``options`` under this process's master, if it has one."""
    parent = master()
    if parent is None:
        return None
    shown = repr(sorted(options.redacted().items()))  # passwords masked
    digest = hashlib.sha256(shown.encode()).hexdigest()[:16]
    return os.path.join(marker_dir(), f"{parent[0]}-{parent[1]}-{digest}")


def mark_checked(options: RedisOptions) -> None:
    """The startup check passed for ``options``: later workers of this master may start
    during an outage."""
    path = marker(options)
    if path is None:
        return
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(path, "a"):
            pass
    except OSError:
        return  # a read-only /tmp: every boot is then a first boot, as before
    prune(os.path.dirname(path))


def replaces_a_worker(options: RedisOptions) -> bool:
    """True when an earlier worker of this process's master passed the check for
    ``options``: this one replaces it and may start during an outage."""
    path = marker(options)
    return path is not None and os.path.exists(path)
