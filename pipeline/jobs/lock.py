"""One writer per run folder: an exclusive lock held by the process that runs the job.

The lock is an advisory ``flock`` on ``RUN_DIR/.porelab.lock``. The kernel drops
it when its process ends, however it ends (SIGKILL, ``scancel``, a lost node),
so a stale lock never blocks the next run. The file also says who holds it
(process id, host, start time, the scheduler's job id when there is one) so the
refusal can name the other writer.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

__all__ = ["LOCK_NAME", "SUBMIT_DIR", "run_lock", "lock_holder"]

#: the lock file inside a run folder
LOCK_NAME = ".porelab.lock"
#: the folder of a run's submissions (records, batch scripts, logs), kept by ``--fresh``
SUBMIT_DIR = ".submit"


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another porelab process"
    who = f"porelab (pid {holder.get('pid')} on {holder.get('host')}"
    if holder.get("job_id"):
        who += f", {holder.get('scheduler', 'scheduler')} job {holder['job_id']}"
    return who + f", since {holder.get('since')})"


def lock_holder(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Who holds the run folder's lock now, or None when nobody does.

    Parameters
    ----------
    run_dir : path
        A run folder (``runs/<name>``).

    Returns
    -------
    dict or None
        ``pid``, ``host``, ``since`` (and ``scheduler``, ``job_id`` when the
        run was submitted) of the holder; ``{}`` when the lock is held but
        its file says nothing readable.
    """
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return json.loads(os.pread(fd, 4096, 0) or b"{}")
            except json.JSONDecodeError:
                return {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold the run folder's exclusive lock for the duration of a ``with`` block.

    Parameters
    ----------
    run_dir : path
        The run folder; created when missing.

    Yields
    ------
    Path
        The lock file.

    Raises
    ------
    UserError
        When another process holds the lock (the message names it), or the
        folder cannot be written.
    """
    run_dir = Path(run_dir)
    path = run_dir / LOCK_NAME
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UserError(f"{run_dir}: cannot create the run folder's lock ({exc.strerror}); expected a writable folder") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(run_dir)
            raise UserError(
                f"{run_dir} is in use by {_describe(holder)}; wait for it to finish or stop it, "
                "two writers on one run folder would corrupt it"
            ) from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        # set by `porelab submit` (Ray, Dask) or by SLURM in a batch job
        if os.environ.get("PORELAB_JOB_ID"):
            holder.update(scheduler=os.environ.get("PORELAB_SCHEDULER", "dask"), job_id=os.environ["PORELAB_JOB_ID"])
        elif os.environ.get("SLURM_JOB_ID"):
            holder.update(scheduler="slurm", job_id=os.environ["SLURM_JOB_ID"])
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
        except OSError as exc:  # a full disk: the lock still holds, only its note is missing
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
        yield path
    finally:
        os.close(fd)  # releases the lock
