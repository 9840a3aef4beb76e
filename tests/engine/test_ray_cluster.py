"""The local Ray engine binds to 127.0.0.1, keeps its token out of the home directory, and stops."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from pipeline.engine.ray_cluster import ray_session


def test_local_ray_on_loopback(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    token = Path.home() / ".ray" / "auth_token"
    had_token = token.exists()
    with ray_session(num_cpus=1, temp_dir=Path("/tmp") / f"plr-{tmp_path.name[-6:]}"):
        assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")

        @ray.remote
        def square(x: int) -> int:
            return x * x

        assert ray.get([square.remote(i) for i in range(4)]) == [0, 1, 4, 9]
    assert not ray.is_initialized()
    assert token.exists() == had_token


def test_unreachable_ray_is_a_user_error() -> None:
    from pipeline.errors import UserError

    with pytest.raises(UserError, match="no Ray cluster answered at 127.0.0.1:9"):
        with ray_session("127.0.0.1:9"):
            pass


def test_second_local_instance_in_one_process(tmp_path: Path) -> None:
    """Ray caches the first token it reads; a later local instance must still accept its driver."""
    ray = pytest.importorskip("ray")
    for i in range(2):
        tmp = Path(tempfile.mkdtemp(prefix="plr-", dir="/tmp"))  # unix socket paths must stay short
        try:
            with ray_session(num_cpus=1, temp_dir=tmp):
                assert ray.get(ray.put(i)) == i
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        assert not ray.is_initialized()
