"""The Ray engine: a local instance bound to 127.0.0.1, or a running cluster."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipeline.engine.probe import split_address, tcp_reachable
from pipeline.errors import UserError

__all__ = ["ray_session", "default_temp_dir"]

log = logging.getLogger("porelab.engine")

# Ray keeps unix sockets under its temp dir; their paths must stay under 108 bytes.
_MAX_TEMP_DIR_LEN = 40

# One token per process for local instances: Ray's C++ token loader caches the
# first token it reads, so a second local instance with a new token would be
# refused by its own driver.
_local_token: str | None = None


def _process_token() -> str:
    global _local_token
    if _local_token is None:
        _local_token = secrets.token_hex(16)
    return _local_token


def _reset_token_cache() -> None:
    """Drop the token Ray's loader cached from an earlier session in this process."""
    try:
        from ray._raylet import AuthenticationTokenLoader
    except ImportError:  # older Ray without token auth
        return
    reset = getattr(AuthenticationTokenLoader.instance(), "reset_cache", None)
    if reset is not None:
        reset()


def default_temp_dir() -> Path:
    """Ray's temporary folder: ``$PORELAB_CACHE/ray`` or ``./.cache/ray`` when short enough."""
    base = Path(os.environ.get("PORELAB_CACHE", Path.cwd() / ".cache")).resolve() / "ray"
    if len(str(base)) <= _MAX_TEMP_DIR_LEN:
        return base
    return Path(tempfile.gettempdir()) / f"porelab-ray-{os.getuid()}"


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def ray_session(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    temp_dir: str | os.PathLike[str] | None = None,
) -> Iterator[None]:
    """Make Ray available for the duration of a ``with`` block.

    Parameters
    ----------
    address : str, optional
        ``HOST:PORT`` (or ``ray://HOST:PORT``) of a running Ray cluster; its
        token, when it uses one, comes from ``RAY_AUTH_TOKEN``. None starts a
        local instance bound to 127.0.0.1 with a fresh token kept in this
        process's environment (nothing written to the home directory).
    num_cpus : int, optional
        CPUs of the local instance; default all cores.
    temp_dir : path, optional
        Ray's temporary folder; default :func:`default_temp_dir`.

    Notes
    -----
    If Ray is already initialised in this process the block reuses it and
    leaves it running.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    if address is not None:
        host_port = split_address(address)
        if address != "auto" and (host_port is None or not tcp_reachable(*host_port)):
            raise UserError(f"no Ray cluster answered at {address}; expected HOST:PORT of a running Ray head")
        # A head bound to loopback (cluster/local) only accepts a driver that
        # also stays on loopback, which Ray allows only with clusters switched off.
        loopback = host_port is not None and (host_port[0].startswith("127.") or host_port[0] == "localhost")
        import ray._private.ray_constants as ray_constants

        saved = ray_constants.ENABLE_RAY_CLUSTER
        extra = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"} if loopback else {}
        with _env(**extra):
            if loopback:
                ray_constants.ENABLE_RAY_CLUSTER = False
            _reset_token_cache()
            try:
                ray.init(address=address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                ray_constants.ENABLE_RAY_CLUSTER = saved
                raise UserError(f"no Ray cluster answered at {address} ({exc})") from None
            try:
                yield
            finally:
                ray.shutdown()
                ray_constants.ENABLE_RAY_CLUSTER = saved
        return

    tmp = Path(temp_dir) if temp_dir is not None else default_temp_dir()
    tmp.mkdir(parents=True, exist_ok=True)
    # Bind every Ray service to the loopback interface (Ray resolves "localhost"
    # to the public address unless clusters are switched off for this node).
    import ray._private.ray_constants as ray_constants

    env = {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_TOKEN": os.environ.get("RAY_AUTH_TOKEN") or _process_token(),
        "RAY_USAGE_STATS_ENABLED": "0",
        # Workers import the package from wherever the driver does.
        "PYTHONPATH": os.pathsep.join(p for p in [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")] if p),
    }
    saved = ray_constants.ENABLE_RAY_CLUSTER
    with _env(**env):
        ray_constants.ENABLE_RAY_CLUSTER = False
        _reset_token_cache()
        # Ray warns on every start that it turned token auth on by default: porelab did that on purpose.
        quiet = logging.getLogger("ray._private.authentication.authentication_token_setup")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                _temp_dir=str(tmp),
                log_to_driver=False,
                configure_logging=False,
            )
            quiet.setLevel(level)
            log.info("Ray local instance on %s, %s CPUs", ray.get_runtime_context().gcs_address, num_cpus or "all")
            yield
        finally:
            quiet.setLevel(level)
            ray.shutdown()
            ray_constants.ENABLE_RAY_CLUSTER = saved
            if sys.exc_info()[0] is None and temp_dir is None:
                shutil.rmtree(tmp / "session_latest", ignore_errors=True)
