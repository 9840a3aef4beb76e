"""The Dask engine: a local cluster sized to the machine, or a running scheduler."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import psutil

from pipeline.engine.probe import split_address, tcp_reachable
from pipeline.errors import UserError

__all__ = ["dask_client", "check_scheduler", "tls_security", "default_workers", "gpu_worker_layout", "cluster_memory",
           "fits_in_memory", "threads_per_task", "worker_memory"]

log = logging.getLogger("porelab.engine")


#: glibc's mmap threshold for local workers (its largest dynamic value on 64-bit). The nannies
#: set MALLOC_TRIM_THRESHOLD_, which freezes glibc's threshold at 128 KiB: every temporary of
#: a slice (256 x 256 float64 is 512 KiB) is then a fresh mmap, page-faulted and zeroed. The
#: correction of 640 slices of 256 x 256 on one worker took 59 s that way and 26 s with this
#: threshold, at the same peak RSS (285 MiB). Free heap is still trimmed, and given back when
#: a worker nears its limit (:class:`pipeline.engine.worker_memory.TrimWhenHigh`).
MMAP_THRESHOLD = 32 * 2**20

#: Graphs above this size make the client warn ("Sending large graph"). porelab's passes carry small
#: per-slab arrays by design (a correction pass its slabs' stripe offsets: 15 MB for 1907 slices of 1024
#: columns); the warning would ask users to change code they did not write. Scoped to porelab's clients.
LARGE_GRAPH = "256MB"


def default_workers(cpu_count: int | None = None) -> tuple[int, int]:
    """Workers and threads per worker for a local cluster on this machine.

    One single-threaded process per core: our filters release the GIL only in
    part, and processes keep each worker's memory limit meaningful.
    """
    if cpu_count is None:
        cpu_count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, int(cpu_count)), 1


def gpu_worker_layout(n_workers: int | None, threads_per_worker: int | None) -> tuple[int, int]:
    """Local workers and threads for CuPy chunks: one single-threaded worker, on GPU 0, unless set.

    Several threads driving one GPU through CuPy (Dask's threaded scheduler)
    gave wrong filter results and hangs that changed from run to run on an
    H200 with CuPy 14, where one thread gave the NumPy results; several
    processes on one GPU each hold a CUDA context; a local cluster therefore
    gets one single-threaded worker. For several GPUs start one worker per
    GPU (dask-cuda's ``dask cuda worker``) and pass ``--dask``.
    """
    if threads_per_worker not in (None, 1):
        log.warning("backend cupy with %d threads per worker: CuPy is driven from several threads at once", threads_per_worker)
    return (n_workers or 1), (threads_per_worker or 1)


def cluster_memory() -> int:
    """Bytes of memory the active Dask scheduler can hold data in.

    With a ``distributed`` client: the sum of the workers' memory limits
    (a worker without a limit counts as this machine's available memory).
    Without one (threaded scheduler, in this process): this machine's
    available memory.
    """
    available = int(psutil.virtual_memory().available)
    try:
        from distributed import get_client

        client = get_client()
    except (ImportError, ValueError):
        return available
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    return sum(int(w.get("memory_limit") or available) for w in workers.values()) or available


def fits_in_memory(nbytes: int, fraction: float = 0.3) -> bool:
    """Whether ``nbytes`` of data may be kept in the cluster's memory (see :func:`cluster_memory`).

    ``fraction`` leaves room for the work on top of the kept data (blocks
    in flight, their temporaries, the result) below the workers' spill
    threshold (60 % by default).
    """
    return 0 <= nbytes <= fraction * cluster_memory()


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads_per_task(client: Any = None) -> int:
    """Intra-op threads a task may use (torch) so that every worker thread busy at once never exceeds the cores.

    The cores of each worker's host divided by the Dask threads of all workers
    on that host; the smallest over the hosts. Without a client (Dask's
    threaded scheduler in this process): the cores divided by them.
    """
    if client is None:
        try:
            from distributed import get_client

            client = get_client()
        except (ImportError, ValueError):
            return 1
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    if not workers:
        return 1
    cores = client.run(_cores)
    per_host: dict[str, list[int]] = {}
    for addr, w in workers.items():
        host = str(w.get("host", addr))
        per_host.setdefault(host, [0, 0])
        per_host[host][0] += int(w.get("nthreads", 1))
        per_host[host][1] = max(per_host[host][1], int(cores.get(addr, 1)))
    return max(1, min(c // max(t, 1) for t, c in per_host.values()))


def worker_memory(client: Any = None) -> int | None:
    """The smallest memory limit of the workers (bytes), or None without a client or limits."""
    if client is None:
        try:
            from distributed import get_client

            client = get_client()
        except (ImportError, ValueError):
            return None
    limits = [int(w.get("memory_limit") or 0) for w in client.scheduler_info(n_workers=-1).get("workers", {}).values()]
    limits = [m for m in limits if m > 0]
    return min(limits) if limits else None


def _check_address(address: str) -> None:
    if not address.startswith(("tcp://", "tls://", "inproc://", "ucx://")) or ":" not in address.split("://", 1)[1]:
        raise UserError(f"--dask address {address!r} is not valid; expected tcp://HOST:PORT")


def tls_security(ca_file: str | os.PathLike[str], cert: str | os.PathLike[str], key: str | os.PathLike[str] | None = None) -> Any:
    """``distributed.Security`` for a TLS cluster from the user's PEM files (encryption required).

    Raises
    ------
    UserError
        When a file is missing.
    """
    from distributed.security import Security

    for what, path in (("ca_file", ca_file), ("cert", cert), ("key", key)):
        if path is not None and not Path(path).is_file():
            raise UserError(f"engine.dask.tls.{what}: {path} is not a file; expected a PEM certificate or key")
    files = {"tls_ca_file": str(ca_file), "tls_client_cert": str(cert), "tls_client_key": None if key is None else str(key)}
    # a local cluster's scheduler and workers present the same certificate
    files.update(tls_scheduler_cert=files["tls_client_cert"], tls_scheduler_key=files["tls_client_key"],
                 tls_worker_cert=files["tls_client_cert"], tls_worker_key=files["tls_client_key"])
    return Security(require_encryption=True, **files)


def check_scheduler(address: str) -> None:
    """Raise a one-sentence UserError unless ``address`` is a scheduler address that accepts connections."""
    _check_address(address)
    host_port = split_address(address)
    if host_port is not None and not tcp_reachable(*host_port):
        raise UserError(f"no Dask scheduler answered at {address} (connection refused or timed out)")


@contextlib.contextmanager
def dask_client(
    address: str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | int | None = None,
    local_directory: str | os.PathLike[str] | None = None,
    timeout_s: float = 30.0,
    profile: bool = False,
    security: Any = None,
) -> Iterator[Any]:
    """Give a ``distributed.Client`` for the duration of a ``with`` block.

    Parameters
    ----------
    address : str, optional
        ``tcp://HOST:PORT`` of a running scheduler. None starts a
        ``LocalCluster`` on 127.0.0.1 (dashboard on 127.0.0.1 too).
    n_workers, threads_per_worker : int, optional
        Local cluster size; default one single-threaded worker per core.
    memory_limit : str or int, optional
        Memory limit per local worker ("2GiB", bytes). Default: the machine's
        available memory times 0.8, split between workers.
    local_directory : path, optional
        Workers' spill and scratch folder (keep it inside the run or an
        ignored cache folder, never the home directory); removed on exit
        when this call created it.
    profile : bool
        Keep the local workers' statistical profiler on (the dashboard's
        Profile page); off by default, its history grows in worker memory.
    security : distributed.Security, optional
        TLS settings (see :func:`tls_security`): required by a ``tls://``
        scheduler unless Dask's own config names certificates; a local
        cluster then uses TLS between all its processes too.

    Raises
    ------
    UserError
        If the scheduler at ``address`` cannot be reached.
    """
    from distributed import Client, LocalCluster

    # distributed logs every start and stop at INFO; keep that for --verbose.
    noisy = logging.getLogger("distributed")
    if not log.isEnabledFor(logging.INFO) and noisy.level < logging.ERROR:
        noisy.setLevel(logging.ERROR)
    if address is not None:
        check_scheduler(address)
        # A scheduler that goes away makes the client log each failed reconnect with a traceback;
        # the run reports the loss itself, in one sentence (the runner's ClusterError).
        client_log = logging.getLogger("distributed.client")
        if not log.isEnabledFor(logging.INFO) and client_log.level < logging.CRITICAL:
            client_log.setLevel(logging.CRITICAL)
        if address.startswith("tls://") and security is None and not dask.config.get("distributed.comm.tls.ca-file", None):
            raise UserError(f"{address} is a TLS scheduler; give its certificates in the job (engine.dask.tls: ca_file, cert, key)")
        try:
            client = Client(address, timeout=timeout_s, **({"security": security} if security is not None else {}))
        except (OSError, TimeoutError) as exc:
            raise UserError(f"no Dask scheduler answered at {address} ({exc})") from None
        try:
            with dask.config.set({"distributed.admin.large-graph-warning-threshold": LARGE_GRAPH}):
                yield client
        finally:
            client.close()
        return

    workers, threads = default_workers()
    n_workers = n_workers or workers
    threads_per_worker = threads_per_worker or threads
    if memory_limit is None:
        memory_limit = int(psutil.virtual_memory().available * 0.8 / n_workers)
    created = local_directory is not None and not Path(local_directory).exists()
    if local_directory is not None:
        Path(local_directory).mkdir(parents=True, exist_ok=True)
    # The workers' statistical profiler keeps an hour of call trees in memory (about 4 MB a
    # minute on a busy worker); under a tight memory limit that alone reaches the pause
    # threshold, and a paused worker with nothing to spill waits for good. Scoped here: the
    # nannies hand this config to the workers they spawn.
    settings: dict[str, Any] = {"distributed.worker.profile.enabled": profile}
    spawn_env = dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {}
    if "MALLOC_MMAP_THRESHOLD_" not in spawn_env and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        settings["distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
    with dask.config.set(settings):
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            memory_limit=memory_limit,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            local_directory=None if local_directory is None else str(local_directory),
            **({"security": security, "protocol": "tls://"} if security is not None else {}),
            # a failed task reaches the run as its exception (a full disk: one sentence); the
            # workers' own "Compute Failed" report of it is for --verbose
            silence_logs=logging.ERROR if log.isEnabledFor(logging.INFO) else logging.CRITICAL,
        )
    client = Client(cluster, **({"security": security} if security is not None else {}))
    from pipeline.engine.worker_memory import TrimWhenHigh

    client.register_plugin(TrimWhenHigh())  # heap memory kept for speed is given back near the limit
    log.info("Dask local cluster: %d workers x %d threads, %s per worker, dashboard %s",
             n_workers, threads_per_worker, memory_limit, client.dashboard_link)
    try:
        with dask.config.set({"distributed.admin.large-graph-warning-threshold": LARGE_GRAPH}):
            yield client
    finally:
        client.close()
        cluster.close()
        if created:  # a scratch folder made for this cluster goes with it
            shutil.rmtree(local_directory, ignore_errors=True)
