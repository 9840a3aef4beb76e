"""Dask: run a job against a running scheduler from a detached process, its log and exit code in the run folder.

``python -m pipeline.submit.detached EXIT_FILE -- run JOB ...`` runs the
``porelab`` command line and writes its exit code to ``EXIT_FILE`` when it
ends. The process has its own session, so it outlives the shell that
submitted it; its id and start time are in the submission record.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from pipeline.submit.records import SchedulerState, Submission

__all__ = ["submit_dask", "detached_state", "detached_logs"]


def submit_dask(*, job_id: str, job_file: Path, run_dir: Path, runs_dir: Path, address: str, run_args: list[str]) -> Submission:
    """Start ``porelab run JOB --dask ADDRESS`` detached; its output goes to ``RUN_DIR/.submit/<job id>.log``.

    Raises
    ------
    UserError
        When no scheduler answers at ``address`` (checked before anything starts).
    """
    from pipeline.engine.dask_cluster import check_scheduler

    check_scheduler(address)
    folder = run_dir / ".submit"
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"{job_id}.log"
    exit_file = folder / f"{job_id}.exit"
    argv = [sys.executable, "-m", "pipeline.submit.detached", str(exit_file), "--",
            "run", str(job_file), "--dask", address, "--runs-dir", str(runs_dir), *run_args]
    env = {**os.environ, "PORELAB_JOB_ID": job_id, "PORELAB_SCHEDULER": "dask", "PORELAB_PROGRESS": "0"}
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env, close_fds=True)
    try:
        started = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess:  # already over: its exit file says how
        started = None
    return Submission("dask", job_id, str(run_dir), str(job_file), address=address, log=str(log),
                      pid=proc.pid, host=socket.gethostname(), started=started, exit_file=str(exit_file))


def _alive(sub: Submission) -> bool:
    if sub.pid is None:
        return False
    try:
        proc = psutil.Process(sub.pid)
        return proc.status() != psutil.STATUS_ZOMBIE and (sub.started is None or abs(proc.create_time() - sub.started) < 1.0)
    except psutil.NoSuchProcess:
        return False


def detached_state(sub: Submission) -> SchedulerState:
    """RUNNING while the process lives, then SUCCEEDED or FAILED by its exit code; LOST when it died without one."""
    exit_file = Path(sub.exit_file) if sub.exit_file else None
    if exit_file is not None and exit_file.is_file():
        code = exit_file.read_text().strip()
        return SchedulerState("SUCCEEDED", False) if code == "0" else SchedulerState("FAILED", False, f"exit code {code}")
    if sub.host and sub.host != socket.gethostname():
        return SchedulerState("UNKNOWN", False, f"its process runs on {sub.host}; ask there")
    if _alive(sub):
        return SchedulerState("RUNNING", True, f"pid {sub.pid}")
    return SchedulerState("LOST", False, f"pid {sub.pid} ended without an exit code (killed)")


def detached_logs(sub: Submission, *, follow: bool, write: Callable[[str], Any], poll_s: float = 0.5) -> None:
    """Hand the log file to ``write``; with ``follow``, keep reading until the process has ended."""
    from pipeline.submit.logs import follow_file

    follow_file(Path(str(sub.log)), write, until=(lambda: not detached_state(sub).active) if follow else None, poll_s=poll_s)


def _main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] != "--":
        print("usage: python -m pipeline.submit.detached EXIT_FILE -- PORELAB-ARGS...", file=sys.stderr)
        return 2
    exit_file = Path(argv[0])
    from pipeline.cli.main import main

    code = 1
    try:
        code = main(argv[2:])
    finally:
        tmp = exit_file.with_name(f".{exit_file.name}.tmp")
        try:
            tmp.write_text(f"{code}\n")
            os.replace(tmp, exit_file)
        except OSError:  # a full disk: the state reads LOST, the log says why
            pass
        print(f"[porelab submit] exit code {code} at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
