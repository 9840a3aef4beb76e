"""Ray: submit a job through a Ray cluster's Jobs API, ask for its state, read its logs.

The job runs ``python -m pipeline run JOB --ray auto`` on the head, with the
porelab checkout that submitted it as its working directory (uploaded by
Ray, without the virtual environment, caches and runs), so the driver and
every Ray worker import the same porelab. The job file and the runs folder
are absolute paths that the cluster reads (a shared filesystem).

Token authentication: the client sends ``RAY_AUTH_TOKEN`` (or the file named
by ``RAY_AUTH_TOKEN_PATH``) when ``RAY_AUTH_MODE=token``, as the cluster's
nodes were started with.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.submit.records import SchedulerState, Submission

__all__ = ["submit_ray", "ray_state", "ray_logs", "UPLOAD_EXCLUDES"]

#: left out of the uploaded working directory (gitignore syntax)
UPLOAD_EXCLUDES = [".venv", ".venv/**", ".cache", ".cache/**", "runs", "runs/**", ".git", "*.zarr", "bench-data", ".whl", ".gl"]


def _client(address: str) -> Any:
    if not address.startswith(("http://", "https://")):
        raise UserError(f"--address {address!r} is not a Ray dashboard address; expected http://HOST:8265")
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # noqa: BLE001 - connection refused, 401/403, timeouts, all reported alike
        raise UserError(_explain(address, exc)) from None


def _explain(address: str, exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    if "401" in text or "403" in text or "uthentication" in text or "Unauthorized" in text:
        return (f"the Ray cluster at {address} refused porelab's token ({text}); export RAY_AUTH_MODE=token and "
                "RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) as the cluster's nodes have them")
    return f"no Ray Jobs API answered at {address} ({text}); expected the dashboard address of a running Ray head"


def submit_ray(
    *,
    job_id: str,
    job_file: Path,
    run_dir: Path,
    runs_dir: Path,
    address: str,
    home: Path,
    run_args: list[str],
) -> Submission:
    """Submit ``porelab run`` of ``job_file`` to the Ray cluster whose dashboard is ``address``.

    Parameters
    ----------
    job_id : str
        The submission id given to Ray (unique on the cluster).
    job_file, run_dir, runs_dir : Path
        Absolute paths as the cluster reads them.
    address : str
        ``http://HOST:8265``.
    home : Path
        The porelab checkout, uploaded as the job's working directory.
    run_args : list of str
        More ``porelab run`` arguments (``--dask ADDR``, ``--fresh``).
    """
    client = _client(address)
    entrypoint = shlex.join(
        ["python", "-m", "pipeline", "run", str(job_file), "--runs-dir", str(runs_dir), "--ray", "auto", *run_args]
    )
    runtime_env = {
        "working_dir": str(home),
        "excludes": UPLOAD_EXCLUDES,
        "env_vars": {"PORELAB_JOB_ID": job_id, "PORELAB_SCHEDULER": "ray", "PORELAB_PROGRESS": "0",
                     "RAY_USAGE_STATS_ENABLED": "0"},
    }
    try:
        client.submit_job(entrypoint=entrypoint, submission_id=job_id, runtime_env=runtime_env,
                          metadata={"porelab_run_dir": str(run_dir)})
    except Exception as exc:  # noqa: BLE001
        raise UserError(_explain(address, exc)) from None
    return Submission("ray", job_id, str(run_dir), str(job_file), address=address)


def ray_state(sub: Submission) -> SchedulerState:
    """The Jobs API's status of a submission (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED)."""
    try:
        client = _client(str(sub.address))
        info = client.get_job_info(sub.job_id)
    except UserError as exc:
        return SchedulerState("UNKNOWN", False, str(exc))
    except Exception as exc:  # noqa: BLE001 - a job the cluster no longer knows
        return SchedulerState("UNKNOWN", False, str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__)
    status = str(getattr(info.status, "value", info.status))
    return SchedulerState(status, status in ("PENDING", "RUNNING"), (info.message or "") if status != "RUNNING" else "")


def ray_logs(sub: Submission, *, follow: bool, write: Callable[[str], Any]) -> None:
    """Hand the job's driver log to ``write``: all of it, or as it grows until the job ends (``follow``)."""
    client = _client(str(sub.address))
    try:
        if not follow:
            write(client.get_job_logs(sub.job_id))
            return

        async def tail() -> None:
            async for lines in client.tail_job_logs(sub.job_id):
                write(lines)

        asyncio.run(tail())
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise UserError(_explain(str(sub.address), exc)) from None
