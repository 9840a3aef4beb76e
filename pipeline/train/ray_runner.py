"""Ray Train wiring: a ``TorchTrainer`` over :func:`pipeline.train.loop.train_worker`.

``ScalingConfig(num_workers, use_gpu)`` comes from the job; each worker gets
``cpus_per_worker`` CPUs and as many torch threads, so workers never
oversubscribe the cores. Ray keeps its copy of the checkpoints under the run
folder (``storage``); ``FailureConfig(max_failures)`` restarts the worker
group from the last reported checkpoint when a worker dies.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.train.config import WorkerSettings

__all__ = ["fit_ray", "cpus_per_worker"]


def cpus_per_worker(workers: WorkerSettings, available: float) -> int:
    """CPUs each Ray Train worker reserves (and uses as torch threads)."""
    if workers.cpus_per_worker:
        return int(workers.cpus_per_worker)
    return max(1, int(available) // int(workers.num_workers))


def fit_ray(config: dict[str, Any], workers: WorkerSettings, *, storage: Path, name: str,
            watch: Callable[[threading.Event], None] | None = None) -> None:
    """Run the training loop on ``workers.num_workers`` Ray Train workers (Ray must be initialised).

    Parameters
    ----------
    config : dict
        The workers' ``train_loop_config`` (see :func:`pipeline.train.run.worker_config`).
    storage : path
        Ray Train's ``storage_path`` (inside the run folder; shared by every node on a cluster).
    name : str
        Ray Train run name; a trainer rebuilt with the same name and storage resumes that run.
    watch : callable, optional
        Run in a thread while training (progress display); given an event set when training ends.

    Raises
    ------
    RuntimeError
        When training failed more than ``max_failures`` times.
    """
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipeline.train.loop import train_worker

    available = float(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
    cpus = cpus_per_worker(workers, available)
    if cpus * workers.num_workers > available:
        raise ValueError(f"{workers.num_workers} workers x {cpus} CPUs is more than the {available:g} CPUs of the Ray cluster")
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={**config, "threads": cpus},
        scaling_config=ScalingConfig(num_workers=workers.num_workers, use_gpu=workers.use_gpu,
                                     resources_per_worker={"CPU": cpus}),
        run_config=RunConfig(
            name=name,
            storage_path=str(Path(storage).resolve()),
            failure_config=FailureConfig(max_failures=workers.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    done = threading.Event()
    thread = threading.Thread(target=watch, args=(done,), daemon=True) if watch else None
    if thread:
        thread.start()
    try:
        result = trainer.fit()
    except Exception as exc:  # noqa: BLE001 - Ray wraps the worker's error
        raise RuntimeError(f"training failed: {exc}") from exc
    finally:
        done.set()
        if thread:
            thread.join(timeout=5)
    if getattr(result, "error", None):
        raise RuntimeError(f"training failed: {result.error}")
