"""The entry points of ``porelab submit`` and ``porelab logs``: one job file to one scheduler, and its log."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pipeline
from pipeline.errors import UserError
from pipeline.jobs.models import JobSpec, load_job
from pipeline.jobs.registry import stage_engines
from pipeline.submit.records import Submission, refuse_if_active, save_submission, scheduler_state, submitting
from pipeline.submit.slurm import SlurmOptions, current_venv, recipe_path, render_sbatch, sbatch

__all__ = ["job_engines", "submit_job", "stream_logs", "checkout"]

Target = Literal["slurm", "ray", "dask"]


def checkout() -> Path:
    """The folder holding the ``pipeline`` package that runs now (a porelab checkout)."""
    return Path(pipeline.__file__).resolve().parents[1]


def job_engines(spec: JobSpec) -> set[str]:
    """The clusters a job's stages use: ``{"dask"}``, ``{"ray"}``, both, or none."""
    out: set[str] = set()
    for cfg in spec.stages:
        out |= stage_engines(cfg)
    return out


def _job_id(prefix: str, spec: JobSpec) -> str:
    return f"{prefix}-{spec.name}-{secrets.token_hex(3)}"


def submit_job(
    job_file: str | Path,
    *,
    to: Target,
    address: str | None = None,
    runs_dir: str | Path = "runs",
    fresh: bool = False,
    slurm: SlurmOptions | None = None,
    script: str | Path | None = None,
    dask_address: str | None = None,
    dry_run: bool = False,
) -> Submission | str:
    """Submit a job file to SLURM, a Ray cluster or a Dask scheduler; returns the record (the script for a dry run).

    Parameters
    ----------
    job_file : path
        YAML job file; it and the runs folder must be readable where the job
        runs (a shared filesystem).
    to : {"slurm", "ray", "dask"}
        The scheduler.
    address : str, optional
        Ray: the dashboard, ``http://HOST:8265``. Dask: ``tcp://HOST:PORT``
        (or ``tls://``). Not used by SLURM.
    runs_dir : path
        Folder of run folders; the run is ``runs_dir/<job name>``.
    fresh : bool
        Redo every stage (``porelab run --fresh``).
    slurm : SlurmOptions, optional
        Resources of the SLURM allocation.
    script : path, optional
        A batch recipe to use instead of ``cluster/slurm/porelab.sbatch``.
    dask_address : str, optional
        Ray: array stages on this Dask scheduler (default a local cluster on the head).
    dry_run : bool
        SLURM: return the batch script, write and submit nothing.

    Raises
    ------
    UserError
        A bad job file or address, a scheduler that refuses the job, or a run
        folder that is being written or has a job queued or running.
    """
    job_path = Path(job_file).resolve()
    spec = load_job(job_path)
    runs = Path(runs_dir).resolve()
    run_dir = runs / spec.name
    run_args = ["--fresh"] if fresh else []
    if to == "slurm":
        template_path = Path(script).resolve() if script is not None else recipe_path()
        if not template_path.is_file():
            raise UserError(f"{template_path}: no SLURM batch recipe there; pass --script FILE (a copy of cluster/slurm/porelab.sbatch)")
        tls = spec.engine.dask.tls
        dask_tls = None if tls is None else {
            k: None if v is None else job_path.parent / Path(v).expanduser() for k, v in tls.model_dump().items()
        }
        text = render_sbatch(template_path.read_text(), job_file=job_path, run_dir=run_dir, runs_dir=runs,
                             engines=job_engines(spec), options=slurm or SlurmOptions(), home=checkout(),
                             venv=current_venv(), run_args=run_args, dask_tls=dask_tls)
        if dry_run:
            return text
    elif dry_run:
        raise UserError("--dry-run is for --to slurm (it prints the batch script)")
    if to in ("ray", "dask") and not address:
        raise UserError(f"--to {to} needs the address of the {'Ray dashboard (http://HOST:8265)' if to == 'ray' else 'Dask scheduler (tcp://HOST:PORT)'}")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{run_dir}: cannot create the run folder ({exc.strerror})") from None
    with submitting(run_dir):
        refuse_if_active(run_dir)
        if to == "slurm":
            folder = run_dir / ".submit"
            path = folder / "slurm.sbatch"
            path.write_text(text)
            path.chmod(0o755)
            job_id = sbatch(path, cwd=run_dir)
            sub = Submission("slurm", job_id, str(run_dir), str(job_path), script=str(path),
                             log=str(folder / f"slurm-{job_id}.out"))
        elif to == "ray":
            from pipeline.submit.ray_jobs import submit_ray

            extra = [*run_args, *(["--dask", dask_address] if dask_address else [])]
            sub = submit_ray(job_id=_job_id("porelab", spec), job_file=job_path, run_dir=run_dir, runs_dir=runs,
                             address=str(address), home=checkout(), run_args=extra)
        else:
            from pipeline.submit.detached import submit_dask

            sub = submit_dask(job_id=_job_id("dask", spec), job_file=job_path, run_dir=run_dir, runs_dir=runs,
                              address=str(address), run_args=run_args)
        save_submission(sub)
    return sub


def stream_logs(sub: Submission, *, follow: bool = False, write: Callable[[str], Any] = sys.stdout.write) -> None:
    """Hand a submission's log to ``write``; ``follow`` keeps reading until the job has ended."""
    if sub.scheduler == "ray":
        from pipeline.submit.ray_jobs import ray_logs

        ray_logs(sub, follow=follow, write=write)
        return
    if sub.scheduler == "dask":
        from pipeline.submit.detached import detached_logs

        detached_logs(sub, follow=follow, write=write)
        return
    from pipeline.submit.logs import follow_file

    log = Path(str(sub.log))
    if not follow and not log.exists():
        raise UserError(f"{log}: no log yet; SLURM job {sub.job_id} is {scheduler_state(sub)}")
    follow_file(log, write, until=(lambda: not scheduler_state(sub).active) if follow else None)
