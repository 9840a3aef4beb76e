"""The same job against a real `dask scheduler` + two `dask worker` processes gives the local result."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.cli.main import main
from pipeline.io.volume import open_volume


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[str]:
    sched_file = tmp_path / "scheduler.json"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
             "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(sched_file)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists():
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "distributed.cli.dask_worker", address, "--host", "127.0.0.1",
                     "--nworkers", "1", "--nthreads", "1", "--memory-limit", "1GiB", "--no-dashboard",
                     "--local-directory", str(tmp_path / "workers")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
            )
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_remote_scheduler_matches_local(tmp_path: Path, scheduler: str) -> None:
    data = np.random.default_rng(2).normal(1000, 200, (13, 40, 36)).astype(np.float32)
    np.save(tmp_path / "s.npy", data)
    job = {
        "name": "remote",
        "engine": {"dask": {"n_workers": 1}, "chunks": [4, 16, 16]},
        "stages": [{"stage": "ingest", "path": str(tmp_path / "s.npy"), "voxel_size_nm": [8, 4, 4]}],
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    assert main(["run", str(tmp_path / "job.yaml"), "--runs-dir", str(tmp_path / "local")]) == 0
    assert main(["run", str(tmp_path / "job.yaml"), "--runs-dir", str(tmp_path / "remote"), "--dask", scheduler]) == 0
    local = open_volume(tmp_path / "local" / "remote" / "ingest.zarr")
    remote = open_volume(tmp_path / "remote" / "remote" / "ingest.zarr")
    np.testing.assert_array_equal(local.values, remote.values)
    np.testing.assert_array_equal(remote.values, data)
    assert local.attrs["voxel_size_nm"] == remote.attrs["voxel_size_nm"]


def test_unreachable_scheduler_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "s.npy", np.zeros((2, 3, 4), np.uint8))
    job = {"name": "x", "stages": [{"stage": "ingest", "path": "s.npy", "voxel_size_nm": [1, 1, 1]}]}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    code = main(["run", str(tmp_path / "job.yaml"), "--runs-dir", str(tmp_path / "r"), "--dask", "tcp://127.0.0.1:9"])
    assert code == 2
    assert "no Dask scheduler answered at tcp://127.0.0.1:9" in capsys.readouterr().err


def test_malformed_dask_address(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "s.npy", np.zeros((2, 3, 4), np.uint8))
    job = {"name": "x", "stages": [{"stage": "ingest", "path": "s.npy", "voxel_size_nm": [1, 1, 1]}]}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    assert main(["run", str(tmp_path / "job.yaml"), "--runs-dir", str(tmp_path / "r"), "--dask", "localhost"]) == 2
    assert "expected tcp://HOST:PORT" in capsys.readouterr().err
