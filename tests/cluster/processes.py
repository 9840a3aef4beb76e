"""Processes for the cluster tests: start a service in its own session with its log, stop it by PID.

Imported by tests/cluster/conftest.py (the fixtures) and by tests that need the helpers themselves.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

__all__ = ["REPO", "BIN", "free_port", "wait_until", "Service", "Services", "base_env", "store_files"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, *, poll_s: float = 0.2,
               alive: Callable[[], bool] | None = None, log: Path | None = None) -> None:
    """Poll ``check`` until it is true; fail with ``what`` (and the log's tail) after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        tail = "" if log is None or not log.exists() else "\n" + log.read_text(errors="replace")[-3000:]
        if alive is not None and not alive():
            raise AssertionError(f"{what}: the process exited{tail}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s{tail}")
        time.sleep(poll_s)


@dataclass
class Service:
    """One process started by a fixture, in its own session, its output in ``log``; ``stop()`` ends it by PID."""

    name: str
    proc: subprocess.Popen
    log: Path
    tree: set[int] = field(default_factory=set)

    @classmethod
    def start(cls, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> Service:
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, cwd=cwd, start_new_session=True)
        return cls(name, proc, log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def remember_tree(self) -> None:
        """Note the ids of every process below this one (they may leave its session, as Ray's do)."""
        try:
            self.tree |= {p.pid for p in psutil.Process(self.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            pass

    def descendants(self) -> list[psutil.Process]:
        self.remember_tree()
        out = []
        for pid in self.tree:
            try:
                out.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        return out

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the process, then its group and the processes below it; SIGKILL what is left after ``grace_s``."""
        below = self.descendants()
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            for p in below:
                try:
                    p.send_signal(sig)
                except psutil.NoSuchProcess:
                    pass
            _, still = psutil.wait_procs(below, timeout=5 if sig == signal.SIGTERM else 10)
            below = still
            if self.alive():
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
            if not below and not self.alive():
                break
        self.proc.wait()


class Services:
    """The services of one fixture, stopped in reverse order of their start."""

    def __init__(self) -> None:
        self.items: list[Service] = []

    def add(self, service: Service) -> Service:
        self.items.append(service)
        return service

    def stop_all(self) -> None:
        errors = []
        for service in reversed(self.items):  # all asked to stop first: they shut down side by side
            if service.alive():
                service.remember_tree()
                service.proc.terminate()
        for service in reversed(self.items):
            try:
                service.stop()
            except Exception as exc:  # noqa: BLE001 - stop the others anyway
                errors.append(f"{service.name}: {exc}")
        self.items.clear()
        assert not errors, errors


def base_env(tmp: Path) -> dict[str, str]:
    """The environment of every process a fixture starts: this checkout first, caches in the test's folder."""
    env = dict(os.environ)
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
        PORELAB_PROGRESS="0",
        RAY_USAGE_STATS_ENABLED="0",
        DASK_TEMPORARY_DIRECTORY=str(tmp / "dask-tmp"),
        MPLCONFIGDIR=str(REPO / ".cache" / "matplotlib"),
        XDG_CACHE_HOME=str(REPO / ".cache" / "xdg"),
    )
    return env


def store_files(store: Path) -> dict[str, bytes]:
    """Every file of a zarr store by its relative path: two stores are byte-identical when these are equal."""
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}
