"""A full disk or a read-only run folder: one clear sentence, and nothing marked done that is not.

The runs folder is a small tmpfs (or a read-only bind mount) inside a private mount namespace made with
`unshare`, so nothing outside the test sees it and it goes away with the process.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

REPO = Path(__file__).resolve().parents[2]


def _unshare() -> list[str]:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    cmd = ["unshare", "--mount", "--propagation", "private"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--mount"]
    probe = subprocess.run([*cmd, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here ({probe.stderr.strip()})")
    return cmd


def _in_namespace(setup: str, job: Path, runs: Path, out: Path) -> tuple[int, str]:
    """Run ``setup`` then ``porelab run`` in a private mount namespace; copy the runs folder to ``out`` before it goes."""
    porelab = shlex.join([sys.executable, "-m", "pipeline", "run", str(job), "--runs-dir", str(runs)])
    script = f"set -e; {setup}; set +e; {porelab}; rc=$?; cp -a {shlex.quote(str(runs))}/. {shlex.quote(str(out))}/; exit $rc"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PORELAB_PROGRESS": "0"}
    proc = subprocess.run([*_unshare(), "sh", "-c", script], capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    return proc.returncode, proc.stderr


def _job(tmp_path: Path, shape: tuple[int, int, int]) -> tuple[Path, np.ndarray]:
    data = np.random.default_rng(9).integers(0, 65535, shape, dtype=np.uint16)  # incompressible
    np.save(tmp_path / "stack.npy", data)
    job = {"name": "full", "engine": {"dask": {"n_workers": 1, "memory_limit": "1GiB"}, "chunks": [1, shape[1], shape[2]]},
           "stages": [{"stage": "ingest", "path": "stack.npy", "voxel_size_nm": [5, 5, 5]}]}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    return tmp_path / "job.yaml", data


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("[full]")]


def test_disk_full(tmp_path: Path) -> None:
    job, data = _job(tmp_path, (60, 96, 96))  # 1.1 MB of chunks for a 768 KiB disk
    runs, out = tmp_path / "runs", tmp_path / "copy"
    runs.mkdir()
    out.mkdir()
    code, err = _in_namespace(f"mount -t tmpfs -o size=768k tmpfs {runs}", job, runs, out)
    assert code == 3, err
    lines = _error_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("porelab run: error: ") and "No space left on device" in lines[0], lines[0]
    assert "run again: finished blocks are kept" in lines[0]
    manifest = json.loads((out / "full" / "manifest.json").read_text())
    assert manifest["status"] != "done" and manifest["stages"][0]["status"] != "done"
    # every block marked done holds its data; the blocks that did not fit are not marked
    markers = sorted((out / "full" / ".work" / "ingest").glob("ingest.zarr.blocks-*/*.done"))
    assert 0 < len(markers) < data.shape[0]
    arr = zarr.open_array(out / "full" / "ingest.zarr" / "image", mode="r")
    for marker in markers:
        z = int(marker.name.split(".")[0])
        np.testing.assert_array_equal(arr[z], data[z], err_msg=f"slice {z} is marked done but holds other data")


def test_read_only_run_folder(tmp_path: Path) -> None:
    job, data = _job(tmp_path, (6, 16, 16))
    runs, out = tmp_path / "runs", tmp_path / "copy"
    out.mkdir()
    ok = subprocess.run([sys.executable, "-m", "pipeline", "run", str(job), "--runs-dir", str(runs)],
                        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300, cwd=REPO)
    assert ok.returncode == 0, ok.stderr
    before = (runs / "full" / "manifest.json").read_text()
    spec = yaml.safe_load(job.read_text())
    spec["stages"].append({"stage": "baseline"})  # more work for the same run folder
    job.write_text(yaml.safe_dump(spec))
    code, err = _in_namespace(f"mount --bind {runs} {runs} && mount -o remount,bind,ro {runs}", job, runs, out)
    assert code == 2, err
    lines = _error_lines(err)
    assert len(lines) == 1 and "Read-only file system" in lines[0] and str(runs / "full") in lines[0], err
    assert (runs / "full" / "manifest.json").read_text() == before  # nothing marked done, nothing changed
