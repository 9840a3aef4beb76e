"""`porelab submit --to slurm` against a real one-node SLURM: the job runs, status and logs follow it, a second
submission is refused while it runs, and a cancelled job resubmitted resumes from its markers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.io.volume import open_volume

REPO = Path(__file__).resolve().parents[2]


def porelab(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


def _ingest_job(tmp_path: Path, name: str, shape: tuple[int, int, int], chunks: list[int]) -> tuple[Path, np.ndarray]:
    data = np.random.default_rng(3).integers(0, 60000, shape, dtype=np.uint16)
    np.save(tmp_path / "stack.npy", data)
    job = {"name": name, "engine": {"chunks": chunks},
           "stages": [{"stage": "ingest", "path": "stack.npy", "voxel_size_nm": [10, 5, 5]}]}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path, data


def test_submit_to_slurm_runs_the_job(tmp_path: Path, slurm) -> None:
    job, data = _ingest_job(tmp_path, "slurm-tiny", (12, 32, 24), [4, 16, 16])
    runs = tmp_path / "runs"
    sub = porelab(slurm.env, "submit", str(job), "--to", "slurm", "--runs-dir", str(runs), "--nodes", "1",
                  "--cpus-per-task", str(slurm.cpus), "--mem", "2G", "--time", "00:10:00", "--workers-per-node", "1")
    assert sub.returncode == 0, sub.stdout + sub.stderr
    job_id = sub.stdout.strip()
    assert job_id.isdigit(), sub.stdout
    # the script in the run folder is what SLURM runs
    script = runs / "slurm-tiny" / ".submit" / "slurm.sbatch"
    assert "#SBATCH --nodes=1" in script.read_text() and "PORELAB_ENGINES=dask" in script.read_text()
    assert slurm.wait_job(job_id) == "COMPLETED", (runs / "slurm-tiny" / ".submit" / f"slurm-{job_id}.out").read_text()
    np.testing.assert_array_equal(open_volume(runs / "slurm-tiny" / "ingest.zarr").values, data)

    status = porelab(slurm.env, "status", job_id, "--runs-dir", str(runs), "--json")
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["status"] == "done" and info["submission"]["state"] == "COMPLETED"
    assert [(s["name"], s["status"]) for s in info["stages"]] == [("ingest", "done")]
    assert info["stages"][0]["done"] == info["stages"][0]["total"] == 3  # slabs of 4 whole slices
    logs = porelab(slurm.env, "logs", job_id, "--runs-dir", str(runs))
    assert logs.returncode == 0 and "Dask: tcp://127.0.0.1:" in logs.stdout and "ran ingest" in logs.stdout, logs.stdout
