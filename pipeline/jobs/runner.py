"""Run a job: stages in order, each skipped when its output is up to date, resumable blocks.

``runs/<name>/`` holds one output per stage, ``manifest.json`` and the report.
A stage whose recorded hash equals its current hash (config, seed, inputs) and
whose output exists is skipped. A stage that was interrupted keeps its per-block
done markers, so running the job again finishes it without redoing blocks.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import logging
import shutil
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.backend import resolve_backend
from pipeline.errors import ClusterError, UserError
from pipeline.jobs.context import StageContext
from pipeline.jobs.lock import LOCK_NAME, SUBMIT_DIR, run_lock
from pipeline.jobs.manifest import Manifest, git_commit, machine_info, now, package_versions
from pipeline.jobs.models import JobSpec, load_job, spec_hash, stage_hash
from pipeline.jobs.registry import stage_module

__all__ = ["RunResult", "run_job", "stage_seed"]

log = logging.getLogger("porelab.run")


@dataclass
class RunResult:
    """What a run did: its folder, and which stages ran or were up to date."""

    run_dir: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    report: Path | None = None


def _references(cfg: Any, source: str | None, hashes: dict[str, str]) -> list[str]:
    """Earlier stages a stage reads: its input and any setting that names one (truth, path)."""
    refs = [source] if source else []
    for value in cfg.model_dump(mode="json", exclude={"name", "input", "stage"}).values():
        if isinstance(value, str) and value in hashes and value not in refs:
            refs.append(value)
    return refs


def stage_seed(job_seed: int, stage_name: str) -> int:
    """Seed of one stage, derived from the job seed and the stage name (stable across runs)."""
    return int(np.random.SeedSequence([job_seed, zlib.crc32(stage_name.encode())]).generate_state(1)[0])


class _Engines:
    """Engines started on first use and stopped when the run ends."""

    def __init__(self, spec: JobSpec, run_dir: Path, dask_address: str | None, ray_address: str | None,
                 backend: str = "numpy", job_dir: Path = Path(".")) -> None:
        self.spec = spec
        self.job_dir = job_dir
        self.backend = backend
        self.run_dir = run_dir
        self.dask_address = dask_address or spec.engine.dask.address
        self.ray_address = ray_address or spec.engine.ray.address
        self.stack = contextlib.ExitStack()
        self._client: Any = None
        self._ray = False

    def dask(self) -> Any:
        if self._client is None:
            from pipeline.engine.dask_cluster import dask_client, gpu_worker_layout, tls_security

            d = self.spec.engine.dask
            security = None
            if d.tls is not None:  # paths relative to the job file
                security = tls_security(*(None if p is None else self.job_dir / Path(p).expanduser()
                                          for p in (d.tls.ca_file, d.tls.cert, d.tls.key)))
            n_workers, threads = d.n_workers, d.threads_per_worker
            if self.backend == "cupy":
                n_workers, threads = gpu_worker_layout(n_workers, threads)
            self._client = self.stack.enter_context(
                dask_client(
                    self.dask_address,
                    n_workers=n_workers,
                    threads_per_worker=threads,
                    memory_limit=d.memory_limit,
                    local_directory=self.run_dir / ".work" / "dask",
                    security=security,
                )
            )
        return self._client

    def scheduler_lost(self) -> bool:
        """Whether the run's Dask client lost its scheduler (a remote one that went away)."""
        return self._client is not None and self.dask_address is not None and self._client.status != "running"

    def ray(self) -> None:
        if not self._ray:
            from pipeline.engine.ray_cluster import ray_session

            self.stack.enter_context(ray_session(self.ray_address, num_cpus=self.spec.engine.ray.num_cpus))
            self._ray = True

    def close(self) -> None:
        if self.scheduler_lost():  # nothing to close on the other side: do not wait for it
            with contextlib.suppress(Exception):
                self._client.close(timeout=2)
        self.stack.close()


#: errors of the run folder's filesystem that no retry fixes: full, over quota, read-only, not writable
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _storage_error(exc: BaseException, run_dir: Path) -> bool:
    """Whether ``exc`` is the run folder's filesystem refusing a write (not, say, an unreadable input file)."""
    if not isinstance(exc, OSError) or exc.errno not in _STORAGE_ERRNOS:
        return False
    if exc.errno in (errno.EACCES, errno.EPERM):
        return exc.filename is not None and str(exc.filename).startswith(str(run_dir))
    return True


def _lost_scheduler_error(exc: BaseException) -> bool:
    """Whether ``exc`` is how distributed reports a scheduler that went away."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"CommClosedError", "FutureCancelledError", "CancelledError", "StreamClosedError"}) or (
        isinstance(exc, (OSError, TimeoutError)) and "scheduler" in str(exc).lower()
    )


def _stage_failure(exc: BaseException, stage: str, run_dir: Path, engines: _Engines) -> ClusterError | None:
    """The one-sentence error for a stage that failed because of its cluster or its disk; None for other failures."""
    if _storage_error(exc, run_dir):
        assert isinstance(exc, OSError)
        where = exc.filename or run_dir
        return ClusterError(
            f"stage {stage!r} could not write {where} ({exc.strerror or errno.errorcode.get(exc.errno or 0)}); "
            f"free space in or make writable {run_dir.parent} and run again: finished blocks are kept"
        )
    if engines.scheduler_lost() or (engines.dask_address is not None and _lost_scheduler_error(exc)):
        return ClusterError(
            f"the Dask scheduler at {engines.dask_address} went away during stage {stage!r} "
            f"({exc.__class__.__name__}); start it again and run the same command: finished blocks are kept"
        )
    return None


def _output_exists(entry: dict[str, Any]) -> bool:
    out = entry.get("output")
    return out is None or Path(out).exists()


def run_job(
    job_path: str | Path,
    *,
    runs_dir: str | Path = "runs",
    dask_address: str | None = None,
    ray_address: str | None = None,
    fresh: bool = False,
    report: bool = True,
    until: str | None = None,
) -> RunResult:
    """Run the job file ``job_path`` into ``runs_dir/<name>/``.

    Parameters
    ----------
    job_path : path
        YAML job file.
    runs_dir : path
        Folder that holds run folders.
    dask_address, ray_address : str, optional
        Running clusters to use instead of the job's engines or local ones.
    fresh : bool
        Delete the run folder's contents first (not its lock and ``.submit/``) and redo every stage.
    report : bool
        Write ``report/index.html`` at the end (when the report package is installed).
    until : str, optional
        Stop after the stage of this name (``porelab train`` stops after the
        last training stage); the manifest then says ``partial``.
    """
    job_path = Path(job_path)
    spec = load_job(job_path)
    if until is not None and until not in spec.stage_names():
        raise UserError(f"{job_path}: has no stage named {until!r}; its stages are {', '.join(spec.stage_names())}")
    backend = resolve_backend(spec.engine.backend)
    run_dir = Path(runs_dir) / spec.name
    with run_lock(run_dir):
        run_dir = run_dir.resolve()
        if fresh:
            for child in run_dir.iterdir():  # all but the lock we hold and how the run was submitted
                if child.name in (LOCK_NAME, SUBMIT_DIR):
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        try:
            return _run_locked(spec, job_path, run_dir, backend, dask_address, ray_address, report, until)
        except OSError as exc:  # the manifest itself could not be written
            if _storage_error(exc, run_dir):
                raise ClusterError(
                    f"{exc.filename or run_dir}: cannot be written ({exc.strerror}); free space in or make writable "
                    f"{run_dir.parent} and run again"
                ) from None
            raise


def _run_locked(
    spec: JobSpec,
    job_path: Path,
    run_dir: Path,
    backend: str,
    dask_address: str | None,
    ray_address: str | None,
    report: bool,
    until: str | None,
) -> RunResult:
    """:func:`run_job` once the run folder's lock is held."""
    digest = spec_hash(spec)
    old = Manifest.load(run_dir / "manifest.json")
    if (
        old is not None
        and old.data.get("status") == "done"
        and old.data.get("spec_hash") == digest
        and all(_output_exists(e) for e in old.data.get("stages", []))
    ):
        return RunResult(run_dir, skipped=spec.stage_names(), report=Path(old.data["report"]) if old.data.get("report") else None)
    manifest = Manifest(
        run_dir / "manifest.json",
        {
            "name": spec.name,
            "job_file": str(job_path),
            "spec": spec.model_dump(mode="json"),
            "spec_hash": digest,
            "seed": spec.seed,
            "versions": package_versions(),
            "git_commit": git_commit(),
            "machine": machine_info(),
            "backend": backend,
            "created": old.data.get("created", now()) if old else now(),
            "updated": now(),
            "status": "running",
            "stages": [],
        },
    )
    manifest.save()
    result = RunResult(run_dir)
    engines = _Engines(spec, run_dir, dask_address, ray_address, backend, job_dir=job_path.resolve().parent)
    outputs: dict[str, Path] = {}
    hashes: dict[str, str] = {}
    previous: str | None = None
    try:
        for cfg in spec.stages:
            name = cfg.name or cfg.stage
            source = cfg.input or previous
            seed = stage_seed(spec.seed, name)
            digest_stage = stage_hash(cfg, seed, [hashes[r] for r in _references(cfg, source, hashes)])
            hashes[name] = digest_stage
            before = old.stage(name) if old else None
            if before and before.get("status") == "done" and before.get("hash") == digest_stage and _output_exists(before):
                manifest.set_stage({**before, "skipped": True})
                if before.get("output"):
                    outputs[name] = Path(before["output"])
                result.skipped.append(name)
                log.info("stage %s: up to date, skipped", name)
                previous = name
                if name == until:
                    break
                continue
            ctx = StageContext(
                run_dir=run_dir,
                name=name,
                seed=seed,
                backend=backend,
                input=outputs.get(source) if source else None,
                outputs=dict(outputs),
                job_hash=digest,
                stage_hash=digest_stage,
                chunks=spec.engine.chunks,
                job_dir=job_path.resolve().parent,
                _dask_client=engines.dask,
                _ray_init=engines.ray,
            )
            entry: dict[str, Any] = {"name": name, "kind": cfg.stage, "status": "running", "hash": digest_stage,
                                     "seed": seed, "input": source, "started": now()}
            manifest.set_stage(entry)
            print(f"[{spec.name}] {name} ({cfg.stage}) ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            try:
                out = stage_module(cfg.stage).run(ctx, cfg)
            except BaseException as exc:
                clear = None
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    error = "stopped (interrupted or terminated); run the job again to resume it"
                else:
                    clear = _stage_failure(exc, name, run_dir, engines)
                    error = str(clear) if clear else f"{exc.__class__.__name__}: {exc}"
                entry.update(status="failed", error=error, seconds=round(time.perf_counter() - t0, 3))
                with contextlib.suppress(OSError):  # a full disk may refuse the manifest too; it still says "running"
                    manifest.set_stage(entry)
                if clear is not None:
                    raise clear from None
                raise
            entry.update(
                status="done",
                finished=now(),
                seconds=round(time.perf_counter() - t0, 3),
                output=None if out.path is None else str(out.path),
                metrics=out.metrics,
                files={k: str(v) for k, v in out.files.items()},
            )
            manifest.set_stage(entry)
            if out.path is not None:
                outputs[name] = out.path
            result.ran.append(name)
            previous = name
            if name == until:
                break
    except BaseException:
        manifest.data.update(status="failed", updated=now())
        with contextlib.suppress(OSError):
            manifest.save()
        engines.close()
        raise
    engines.close()
    partial = until is not None and until != spec.stage_names()[-1]
    manifest.data.update(status="partial" if partial else "done", updated=now())
    manifest.save()
    if report and importlib.util.find_spec("pipeline.report") is not None:
        from pipeline.report import write_report

        result.report = write_report(run_dir)
        manifest.data["report"] = str(result.report)
        manifest.save()
    return result
