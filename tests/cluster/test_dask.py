"""Jobs on a real `dask scheduler` with two `dask worker` processes: `porelab submit --to dask`, and runs that
survive a SIGKILLed worker or resume after the scheduler itself was killed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
import yaml

from pipeline.cli.status import run_status
from pipeline.io.volume import open_volume
from tests.cluster.processes import REPO, store_files, wait_until


def porelab(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


def porelab_bg(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=REPO, start_new_session=True)


def porous_stack(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """A two-phase structure seen as uint16 grey values, with noise (something to correct)."""
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.standard_normal(shape), (1.0, 2.5, 2.5))
    grey = np.where(field > 0, 30000.0, 12000.0) + rng.normal(0, 1500, shape)
    return np.clip(grey, 0, 65535).astype(np.uint16)


def correct_job(tmp_path: Path, name: str, shape: tuple[int, int, int], chunks: list[int]) -> Path:
    """ingest + correct of a porous stack; the correction writes one block per chunk."""
    np.save(tmp_path / f"{name}.npy", porous_stack(shape, 7))
    job = {
        "name": name,
        "engine": {"chunks": chunks},
        "stages": [
            {"stage": "ingest", "path": f"{name}.npy", "voxel_size_nm": [10, 5, 5]},
            {"stage": "correct", "tilt": {"enabled": False}, "roi": {"mode": "none"}, "slab_mb": 0.25},
        ],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def stage_markers(run_dir: Path, stage: str) -> list[Path]:
    """Done markers of a stage's blocks (``RUN_DIR/.work/<stage>/<stage>.zarr.blocks-*/``)."""
    return list((run_dir / ".work" / stage).glob(f"{stage}.zarr.blocks-*/*.done"))


def correct_markers(run_dir: Path) -> list[Path]:
    return stage_markers(run_dir, "correct")


def test_submit_to_dask_runs_detached(tmp_path: Path, dask_cluster) -> None:
    # 200 one-slice blocks: the job still runs when it is submitted again (with 40 it had finished on a loaded machine)
    data = np.random.default_rng(1).integers(0, 4000, (200, 32, 24), dtype=np.uint16)
    np.save(tmp_path / "s.npy", data)
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "detached", "engine": {"chunks": [1, 32, 24]},
                                   "stages": [{"stage": "ingest", "path": "s.npy", "voxel_size_nm": [5, 5, 5]}]}))
    runs = tmp_path / "runs"
    sub = porelab(dask_cluster.env, "submit", str(job), "--to", "dask", dask_cluster.address, "--runs-dir", str(runs))
    assert sub.returncode == 0, sub.stderr
    job_id = sub.stdout.strip()
    assert job_id.startswith("dask-detached-")
    again = porelab(dask_cluster.env, "submit", str(job), "--to", "dask", dask_cluster.address, "--runs-dir", str(runs))
    assert again.returncode == 2 and "before submitting again" in again.stderr, again.stderr  # RUNNING, or writing
    logs = porelab(dask_cluster.env, "logs", job_id, "--follow", "--runs-dir", str(runs), timeout=180)
    assert logs.returncode == 0 and "ran ingest" in logs.stdout and "exit code 0" in logs.stdout, logs.stdout
    status = json.loads(porelab(dask_cluster.env, "status", job_id, "--runs-dir", str(runs), "--json").stdout)
    assert status["submission"]["state"] == "SUCCEEDED" and status["status"] == "done" and status["writer"] is None
    np.testing.assert_array_equal(open_volume(runs / "detached" / "ingest.zarr").values, data)
    # the blocks were computed by the cluster's workers
    assert "ingest" in json.dumps(status["stages"]) and not (runs / "detached" / ".work" / "dask").exists()


def test_submit_to_dask_needs_a_scheduler(tmp_path: Path) -> None:
    np.save(tmp_path / "s.npy", np.zeros((2, 3, 4), np.uint8))
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "x", "stages": [{"stage": "ingest", "path": "s.npy", "voxel_size_nm": [1, 1, 1]}]}))
    out = porelab(dict(os.environ), "submit", str(job), "--to", "dask", "tcp://127.0.0.1:9", "--runs-dir", str(tmp_path / "r"))
    assert out.returncode == 2 and "no Dask scheduler answered at tcp://127.0.0.1:9" in out.stderr
    assert not list((tmp_path / "r").glob("*/.submit/dask-*.json"))


@pytest.mark.slow
def test_worker_sigkilled_mid_correction(tmp_path: Path, dask_cluster) -> None:
    """A worker SIGKILLed in the middle of the correction: the job completes, same bytes as without the kill."""
    job = correct_job(tmp_path, "killw", (64, 96, 96), [2, 96, 96])
    runs = tmp_path / "killed"
    proc = porelab_bg(dask_cluster.env, "run", str(job), "--dask", dask_cluster.address, "--runs-dir", str(runs))
    try:
        wait_until(lambda: len(correct_markers(runs / "killw")) >= 3, 300, "correction blocks done",
                   poll_s=0.05, alive=lambda: proc.poll() is None)
        dask_cluster.kill_worker()
        killed_at = len(correct_markers(runs / "killw"))
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert killed_at < 32, "the correction had finished before the worker was killed"
    clean = porelab(dask_cluster.env, "run", str(job), "--dask", dask_cluster.address, "--runs-dir", str(tmp_path / "clean"))
    assert clean.returncode == 0, clean.stderr
    for store in ("ingest.zarr", "correct.zarr"):
        assert store_files(runs / "killw" / store) == store_files(tmp_path / "clean" / "killw" / store), store


@pytest.mark.slow
def test_scheduler_killed_then_back(tmp_path: Path, dask_cluster) -> None:
    """The scheduler SIGKILLed mid-stage: one sentence and exit 3; with a scheduler back, the rerun redoes no finished block."""
    job = correct_job(tmp_path, "kills", (64, 96, 96), [2, 96, 96])
    runs = tmp_path / "runs"
    proc = porelab_bg(dask_cluster.env, "run", str(job), "--dask", dask_cluster.address, "--runs-dir", str(runs))
    try:
        wait_until(lambda: len(correct_markers(runs / "kills")) >= 3, 300, "correction blocks done",
                   poll_s=0.05, alive=lambda: proc.poll() is None)
        status = run_status(runs / "kills")  # what `porelab status RUN_DIR --json` prints
        dask_cluster.kill_scheduler()
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=120)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, err
    # while it ran: the writer, ingest done, the correction part way through its 32 blocks
    assert status["writer"]["pid"] == proc.pid and status["status"] == "running"
    (ingest, correct) = status["stages"]
    assert ingest["status"] == "done" and correct["status"] == "running" and correct["total"] == 32
    assert 3 <= correct["done"] < 32 and correct["seconds"] is not None
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("[kills]")]
    assert lines == [f"porelab run: error: the Dask scheduler at {dask_cluster.address} went away during stage 'correct' "
                     + lines[0].split("stage 'correct' ", 1)[1]], err
    assert "start it again and run the same command" in lines[0] and "Traceback" not in err
    assert took < 60, f"the run took {took:.0f} s to give up"
    manifest = json.loads((runs / "kills" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["stages"][1]["status"] == "failed"
    done = len(correct_markers(runs / "kills"))
    assert done < 32

    for w in dask_cluster.workers:  # they lost their scheduler; new ones join the new one
        w.stop()
    dask_cluster.workers.clear()
    dask_cluster.start_scheduler()
    dask_cluster.start_workers(2)
    again = porelab(dask_cluster.env, "run", str(job), "--dask", dask_cluster.address, "--runs-dir", str(runs))
    assert again.returncode == 0, again.stderr
    manifest = json.loads((runs / "kills" / "manifest.json").read_text())
    assert manifest["stages"][0]["skipped"] is True
    assert manifest["stages"][1]["metrics"]["blocks_computed"] == 32 - done


def test_tls_scheduler_with_the_jobs_certificates(tmp_path: Path, tls_dask_cluster) -> None:
    cluster, certs = tls_dask_cluster
    assert cluster.address.startswith("tls://127.0.0.1:")
    data = np.random.default_rng(2).integers(0, 255, (6, 16, 16), dtype=np.uint8)
    np.save(tmp_path / "s.npy", data)
    stages = [{"stage": "ingest", "path": "s.npy", "voxel_size_nm": [5, 5, 5]}]
    tls = {k: p.name for k, p in certs.items()}  # relative to the job file
    (tmp_path / "tls.yaml").write_text(yaml.safe_dump({"name": "tls", "engine": {"dask": {"tls": tls}}, "stages": stages}))
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump({"name": "plain", "stages": stages}))
    runs = tmp_path / "runs"
    ok = porelab(cluster.env, "run", str(tmp_path / "tls.yaml"), "--dask", cluster.address, "--runs-dir", str(runs))
    assert ok.returncode == 0, ok.stderr
    np.testing.assert_array_equal(open_volume(runs / "tls" / "ingest.zarr").values, data)
    assert "Register worker" in cluster.scheduler.log.read_text()
    refused = porelab(cluster.env, "run", str(tmp_path / "plain.yaml"), "--dask", cluster.address, "--runs-dir", str(runs))
    assert refused.returncode == 2 and "engine.dask.tls" in refused.stderr, refused.stderr


@pytest.mark.slow
def test_worker_sigkilled_mid_segmentation(tmp_path: Path, dask_cluster, model_factory) -> None:
    """A worker SIGKILLed while the segment stage runs its model on blocks: same probability and mask bytes."""
    grey = ndi.gaussian_filter(np.random.default_rng(5).random((48, 96, 96)), 1.5).astype(np.float32)
    grey = (grey - grey.min()) / (grey.max() - grey.min())
    np.save(tmp_path / "grey.npy", grey)
    job = tmp_path / "seg.yaml"
    job.write_text(yaml.safe_dump({"name": "killseg", "engine": {"chunks": [2, 96, 96]}, "stages": [
        {"stage": "ingest", "path": "grey.npy", "voxel_size_nm": [10, 10, 10]},
        {"stage": "segment", "model": str(model_factory("slices"))}]}))
    runs = tmp_path / "killed"
    proc = porelab_bg(dask_cluster.env, "run", str(job), "--dask", dask_cluster.address, "--runs-dir", str(runs))
    try:
        wait_until(lambda: len(stage_markers(runs / "killseg", "segment")) >= 3, 300, "segmentation blocks done",
                   poll_s=0.05, alive=lambda: proc.poll() is None)
        dask_cluster.kill_worker()
        killed_at = len(stage_markers(runs / "killseg", "segment"))
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert killed_at < 24, "the segmentation had finished before the worker was killed"
    clean = porelab(dask_cluster.env, "run", str(job), "--dask", dask_cluster.address, "--runs-dir", str(tmp_path / "clean"))
    assert clean.returncode == 0, clean.stderr
    for store in ("ingest.zarr", "segment.zarr"):
        # the segmentation's attrs name its image store, a path inside each run folder
        killed = {k: v.replace(bytes(runs), b"RUNS") for k, v in store_files(runs / "killseg" / store).items()}
        ref = {k: v.replace(bytes(tmp_path / "clean"), b"RUNS") for k, v in store_files(tmp_path / "clean" / "killseg" / store).items()}
        assert killed == ref, store
