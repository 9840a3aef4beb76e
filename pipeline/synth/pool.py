"""Fan-out of independent units of work over Ray tasks (or in this process).

One unit of work is one sample. Units must be idempotent: each writes under
its own sample id and marks itself complete last, so Ray may run a unit again
after its worker process died (``max_retries``) or after a transient
``OSError`` (``retry_exceptions``) without harm.

This module never starts Ray: the caller owns the session
(:func:`pipeline.engine.ray_cluster.ray_session`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from pipeline.progress import progress_bar

__all__ = ["Executor", "fan_out"]

Executor = Literal["ray", "local"]


def fan_out(
    func: Callable[..., Any],
    args: Sequence[tuple[Any, ...]],
    *,
    executor: Executor = "ray",
    max_retries: int = 3,
    num_cpus: float = 1.0,
    progress: str | None = None,
) -> list[Any]:
    """Run ``func(*a)`` for every ``a`` in ``args``; return the results in order.

    Parameters
    ----------
    func : callable
        A module-level function (Ray ships it by reference to the workers).
    args : sequence of tuples
        Arguments of each unit (small: paths, dicts of parameters).
    executor : {"ray", "local"}
        ``"ray"``: one Ray task per unit on the running Ray instance (which
        must be initialised); ``"local"``: one after another in this process.
    max_retries : int
        Times Ray reruns a unit whose worker died or that raised ``OSError``.
    num_cpus : float
        CPUs one unit reserves on the Ray cluster.
    progress : str, optional
        Label of a progress bar.

    Raises
    ------
    Exception
        The first unit error that survived its retries (Ray's error wrapper
        re-raised as the original type where Ray can).
    """
    if executor == "local":
        out = []
        with progress_bar(total=len(args), desc=progress, unit="sample") as bar:
            for a in args:
                out.append(func(*a))
                bar.update(1)
        return out
    if executor != "ray":
        raise ValueError(f"executor must be 'ray' or 'local'; got {executor!r}")
    import ray

    if not ray.is_initialized():
        raise RuntimeError("fan_out(executor='ray') needs a running Ray session (see pipeline.engine.ray_cluster)")
    remote = ray.remote(func).options(
        max_retries=max_retries,
        retry_exceptions=[OSError],
        num_cpus=num_cpus,
    )
    refs = [remote.remote(*a) for a in args]
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[Any] = [None] * len(refs)
    pending = list(refs)
    with progress_bar(total=len(refs), desc=progress, unit="sample") as bar:
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=None)
                for ref in done:
                    results[index[ref]] = ray.get(ref)
                    bar.update(1)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=False)
            raise
    return results
