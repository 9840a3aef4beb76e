"""A `porelab run` killed (SIGKILL) during training resumes from its last checkpoint when run again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _kill_leftovers(marker: str) -> None:
    """SIGKILL every process whose command line names ``marker`` (this test's own Ray temp folder)."""
    for p in psutil.process_iter(["cmdline"]):
        try:
            if marker in " ".join(p.info["cmdline"] or []):
                p.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "ray"])
def test_killed_run_resumes_training(tmp_path: Path, executor: str) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "name": "resume", "seed": 1,
        "engine": {"dask": {"n_workers": 1, "memory_limit": "2GiB"}, "ray": {"num_cpus": 2}},
        "stages": [
            {"stage": "synth", "count": 6, "shape": [16, 64, 64], "executor": "local", "figures": False,
             "structure": {"median_nm": 60}, "splits": {"train": 0.5, "val": 0.5}},
            {"stage": "train2d", "patch": [32, 32], "tile": [64, 64], "epochs": 5, "steps_per_epoch": 8, "batch_size": 4,
             "val_slices": 2, "net": {"features": 4, "depth": 2},
             "workers": {"executor": executor, "num_workers": 1}},
        ]}))
    cache = Path(tempfile.mkdtemp(prefix="plt-", dir="/tmp"))  # short: Ray's socket paths live under it
    env = {**os.environ, "PORELAB_PROGRESS": "0", "PORELAB_CACHE": str(cache)}
    cmd = [sys.executable, "-m", "pipeline", "run", str(job), "--runs-dir", str(tmp_path / "runs")]
    root = tmp_path / "runs" / "resume" / "train2d"
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not (root / "checkpoints" / "epoch-0002").is_dir():
            assert proc.poll() is None, "the run ended before it was killed"
            time.sleep(0.3)
        assert (root / "checkpoints" / "epoch-0002").is_dir()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the runner and what runs in its session
        proc.wait()
        _kill_leftovers(str(cache))  # Ray's daemons leave the session
    assert not (root / "model").exists()
    try:
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    finally:
        _kill_leftovers(str(cache))
        shutil.rmtree(cache, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-2000:]
    starts = [json.loads(line) for line in (root / "starts.jsonl").read_text().splitlines()]
    assert starts[0]["start_epoch"] == 0 and starts[-1]["start_epoch"] >= 2
    history = json.loads((root / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5]
    manifest = json.loads((tmp_path / "runs" / "resume" / "manifest.json").read_text())
    assert manifest["status"] == "done"
