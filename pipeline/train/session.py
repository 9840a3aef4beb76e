"""What a training worker needs from where it runs: its rank, a device, reductions, reports, a restored checkpoint.

:class:`LocalSession` is one process without Ray (``executor: local`` and the
fast tests); :class:`RaySession` is a Ray Train worker (DDP over gloo on CPUs,
NCCL on GPUs). The loop in :mod:`pipeline.train.loop` only talks to this
interface, so the same code runs in both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LocalSession", "RaySession", "current_session"]


class LocalSession:
    """A single worker in this process.

    Parameters
    ----------
    device : str
        Torch device.
    on_report : callable, optional
        Called with each epoch's metrics (progress display).
    """

    rank = 0
    world = 1

    def __init__(self, device: str = "cpu", on_report: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.device = device
        self.on_report = on_report

    def prepare(self, net: Any) -> Any:
        return net.to(self.device)

    def all_reduce(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)

    def report(self, metrics: dict[str, Any], checkpoint: Path | None = None) -> None:
        if self.on_report is not None:
            self.on_report(metrics)

    @contextlib.contextmanager
    def restored(self) -> Iterator[Path | None]:
        yield None


class RaySession:
    """A Ray Train worker: rank and world from ``ray.train.get_context()``, DDP from ``prepare_model``."""

    def __init__(self) -> None:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.rank = int(ctx.get_world_rank())
        self.world = int(ctx.get_world_size())
        self.device = str(ray.train.torch.get_device())

    def prepare(self, net: Any) -> Any:
        import ray.train.torch

        return ray.train.torch.prepare_model(net)

    def all_reduce(self, values: np.ndarray) -> np.ndarray:
        import torch
        import torch.distributed as dist

        t = torch.as_tensor(np.asarray(values, dtype=np.float64))
        if self.world > 1 and dist.is_available() and dist.is_initialized():
            dist.all_reduce(t)
        return t.numpy()

    def report(self, metrics: dict[str, Any], checkpoint: Path | None = None) -> None:
        import ray.train

        ckpt = ray.train.Checkpoint.from_directory(str(checkpoint)) if checkpoint is not None else None
        ray.train.report({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, checkpoint=ckpt)

    @contextlib.contextmanager
    def restored(self) -> Iterator[Path | None]:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            yield None
            return
        with ckpt.as_directory() as d:
            yield Path(d)


def current_session(device: str = "cpu") -> LocalSession | RaySession:
    """A :class:`RaySession` inside a Ray Train worker, else a :class:`LocalSession`."""
    try:
        import ray.train

        ray.train.get_context().get_world_rank()
        return RaySession()
    except Exception:  # noqa: BLE001 - not inside Ray Train
        return LocalSession(device)
