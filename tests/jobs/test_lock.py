"""One writer per run folder: a second `porelab run` is refused while the first holds the lock, and a killed
holder leaves no stale lock behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.cli.main import main
from pipeline.errors import UserError
from pipeline.jobs.lock import LOCK_NAME, lock_holder, run_lock

REPO = Path(__file__).resolve().parents[2]
HOLD = "import sys, time; from pipeline.jobs.lock import run_lock\nwith run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)"


def test_second_writer_is_refused_until_the_first_dies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "s.npy", np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(
        {"name": "one", "stages": [{"stage": "ingest", "path": "s.npy", "voxel_size_nm": [1, 1, 1]}]}))
    run_dir = tmp_path / "runs" / "one"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO), "PORELAB_JOB_ID": "dask-one-abc123"})
    try:
        assert holder.stdout.readline().strip() == "held"
        assert lock_holder(run_dir)["pid"] == holder.pid
        code = main(["run", str(tmp_path / "job.yaml"), "--runs-dir", str(tmp_path / "runs")])
        err = capsys.readouterr().err
        assert code == 2
        assert f"is in use by porelab (pid {holder.pid}" in err and "dask job dask-one-abc123" in err, err
        assert not (run_dir / "manifest.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # the kernel drops the lock with its process
        holder.wait()
    assert lock_holder(run_dir) is None
    assert main(["run", str(tmp_path / "job.yaml"), "--runs-dir", str(tmp_path / "runs")]) == 0
    assert (run_dir / LOCK_NAME).exists() and lock_holder(run_dir) is None


def test_lock_in_one_process_is_exclusive(tmp_path: Path) -> None:
    with run_lock(tmp_path / "r"):
        with pytest.raises(UserError, match="is in use by porelab"):
            with run_lock(tmp_path / "r"):
                pass
    with run_lock(tmp_path / "r"):  # released on exit
        pass


def test_fresh_keeps_the_lock_and_the_submissions(tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", np.zeros((2, 3, 4), np.uint8))
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(
        {"name": "f", "stages": [{"stage": "ingest", "path": "s.npy", "voxel_size_nm": [1, 1, 1]}]}))
    runs = tmp_path / "runs"
    assert main(["run", str(tmp_path / "job.yaml"), "--runs-dir", str(runs)]) == 0
    (runs / "f" / ".submit").mkdir()
    (runs / "f" / ".submit" / "slurm-1.out").write_text("log of the job that runs this\n")
    assert main(["run", str(tmp_path / "job.yaml"), "--runs-dir", str(runs), "--fresh"]) == 0
    assert (runs / "f" / ".submit" / "slurm-1.out").read_text() == "log of the job that runs this\n"
    assert (runs / "f" / "ingest.zarr").exists()
