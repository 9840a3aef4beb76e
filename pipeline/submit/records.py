"""Submission records in ``RUN_DIR/.submit/``, the scheduler's view of them, and the one-writer rule.

A record is a small JSON file per submission (``<job id>.json``) plus
``latest.json``, a copy of the newest. Job ids are the scheduler's: SLURM's
number, the Ray submission id, or ``dask-<name>-<hex>`` for a detached run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.errors import UserError
from pipeline.jobs.lock import SUBMIT_DIR, lock_holder

__all__ = [
    "Submission",
    "SchedulerState",
    "save_submission",
    "latest_submission",
    "find_submission",
    "scheduler_state",
    "refuse_if_active",
    "submitting",
]

Scheduler = Literal["slurm", "ray", "dask"]
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass
class Submission:
    """One submission of a job.

    Attributes
    ----------
    scheduler : {"slurm", "ray", "dask"}
        Who runs it.
    job_id : str
        The scheduler's id of the job.
    run_dir, job_file : str
        Absolute paths of the run folder and of the job file.
    submitted : str
        When (ISO 8601, local time).
    address : str, optional
        Ray dashboard (``http://HOST:8265``) or Dask scheduler address.
    log : str, optional
        The job's log file (SLURM, Dask); Ray keeps logs itself.
    script : str, optional
        The batch script (SLURM).
    pid, host, started : optional
        The detached process of a Dask submission (its id, host and start
        time, which tells it from a later process with the same id).
    exit_file : str, optional
        Where that process writes its exit code.
    """

    scheduler: Scheduler
    job_id: str
    run_dir: str
    job_file: str
    submitted: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    address: str | None = None
    log: str | None = None
    script: str | None = None
    pid: int | None = None
    host: str | None = None
    started: float | None = None
    exit_file: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Submission:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class SchedulerState:
    """What the scheduler says of a job: its own word for the state, and whether it may still write."""

    state: str
    active: bool
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.state} ({self.detail})" if self.detail else self.state


def _submit_dir(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / SUBMIT_DIR


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def save_submission(sub: Submission) -> Path:
    """Write ``sub`` as ``RUN_DIR/.submit/<job id>.json`` and ``latest.json``; returns the first."""
    if not _ID.match(sub.job_id):
        raise ValueError(f"job id {sub.job_id!r} is not a plain name")
    folder = _submit_dir(sub.run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sub.job_id}.json"
    _write_json(path, asdict(sub))
    _write_json(folder / "latest.json", asdict(sub))
    return path


def _load(path: Path) -> Submission | None:
    try:
        return Submission.from_json(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, TypeError):
        return None


def latest_submission(run_dir: str | os.PathLike[str]) -> Submission | None:
    """The newest submission of a run folder, or None."""
    return _load(_submit_dir(run_dir) / "latest.json")


def find_submission(ref: str, runs_dir: str | os.PathLike[str] = "runs") -> Submission:
    """The submission a user names: a run folder (its latest) or a job id of a run under ``runs_dir``.

    Raises
    ------
    UserError
        When ``ref`` is neither a run folder with a submission nor a job id
        recorded under ``runs_dir``.
    """
    path = Path(ref)
    if path.is_dir():
        sub = latest_submission(path)
        if sub is None:
            raise UserError(f"{path}: this run folder was never submitted (no {SUBMIT_DIR}/latest.json); see porelab submit --help")
        return sub
    if _ID.match(ref):
        for record in sorted(Path(runs_dir).glob(f"*/{SUBMIT_DIR}/{ref}.json")):
            sub = _load(record)
            if sub is not None:
                return sub
    raise UserError(f"{ref!r} is neither a run folder nor a job id submitted under {runs_dir}; expected e.g. runs/NAME or the id porelab submit printed")


def scheduler_state(sub: Submission) -> SchedulerState:
    """Ask the submission's scheduler how its job is (SLURM, Ray) or look at its process (Dask)."""
    if sub.scheduler == "slurm":
        from pipeline.submit.slurm import slurm_state

        return slurm_state(sub.job_id)
    if sub.scheduler == "ray":
        from pipeline.submit.ray_jobs import ray_state

        return ray_state(sub)
    from pipeline.submit.detached import detached_state

    return detached_state(sub)


_CANCEL = {"slurm": "scancel {id}", "ray": "ray job stop --address {address} {id}", "dask": "kill {pid}"}


def refuse_if_active(run_dir: str | os.PathLike[str]) -> None:
    """Raise when another process writes ``run_dir`` or a submitted job for it is still queued or running.

    Raises
    ------
    UserError
        Naming the holder or the job, and how to stop it.
    """
    holder = lock_holder(run_dir)
    if holder is not None:
        who = f"{holder.get('scheduler')} job {holder.get('job_id')}" if holder.get("job_id") else f"pid {holder.get('pid')} on {holder.get('host')}"
        raise UserError(f"{run_dir} is being written by porelab ({who}); wait for it to finish or stop it before submitting again")
    sub = latest_submission(run_dir)
    if sub is None:
        return
    state = scheduler_state(sub)
    if state.active:
        hint = _CANCEL[sub.scheduler].format(id=sub.job_id, address=sub.address, pid=sub.pid)
        raise UserError(
            f"{run_dir}: {sub.scheduler} job {sub.job_id} for this run folder is {state.state}; "
            f"wait for it or cancel it ({hint}) before submitting again"
        )


@contextlib.contextmanager
def submitting(run_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Serialise submissions of one run folder (two at the same moment cannot both pass the check)."""
    folder = _submit_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".submitting", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{run_dir}: another porelab submit of this run folder is under way") from None
        yield
    finally:
        os.close(fd)
