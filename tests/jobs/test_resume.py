"""A run killed with SIGKILL mid-stage finishes on the next run without redoing finished blocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from pipeline.io.volume import open_volume

N_SLICES = 400


def _write_job(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    data = rng.integers(0, 4000, (N_SLICES, 48, 40), dtype=np.uint16)
    data[:40] = 0  # blocks equal to the fill value: zarr writes no chunk for them
    np.save(tmp_path / "stack.npy", data)
    job = {
        "name": "resume",
        "engine": {"dask": {"n_workers": 1, "threads_per_worker": 1, "memory_limit": "1GiB"}, "chunks": [1, 48, 40]},
        "stages": [{"stage": "ingest", "path": "stack.npy", "voxel_size_nm": [5, 5, 5]}],
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    return tmp_path / "job.yaml"


def _run(job: Path, runs: Path, **kw: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", str(job), "--runs-dir", str(runs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the kill takes its Dask workers too
        **kw,
    )


def _markers(runs: Path) -> list[Path]:
    return list((runs / "resume" / ".work" / "ingest").glob("ingest.zarr.blocks-*/*.done"))


def _files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def test_resume_after_sigkill(tmp_path: Path) -> None:
    job = _write_job(tmp_path)
    killed_runs = tmp_path / "killed"
    proc = _run(job, killed_runs)
    deadline = time.monotonic() + 120
    while len(_markers(killed_runs)) < 60:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = len(_markers(killed_runs))
    assert 60 <= done_at_kill < N_SLICES, "the stage finished before it could be killed"
    manifest = json.loads((killed_runs / "resume" / "manifest.json").read_text())
    assert manifest["stages"][0]["status"] == "running"

    again = _run(job, killed_runs)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err.decode()
    manifest = json.loads((killed_runs / "resume" / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert manifest["stages"][0]["metrics"]["blocks_computed"] == N_SLICES - done_at_kill

    clean_runs = tmp_path / "clean"
    clean = _run(job, clean_runs)
    _, err = clean.communicate(timeout=300)
    assert clean.returncode == 0, err.decode()
    resumed_store = killed_runs / "resume" / "ingest.zarr"
    clean_store = clean_runs / "resume" / "ingest.zarr"
    np.testing.assert_array_equal(open_volume(resumed_store).values, np.load(tmp_path / "stack.npy"))
    assert _files(resumed_store) == _files(clean_store)
