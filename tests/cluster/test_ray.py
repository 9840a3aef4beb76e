"""Jobs on a real two-node Ray cluster on 127.0.0.1 with token auth: `porelab submit --to ray` through the Jobs
API, `status` and `logs` on it, and a synthetic dataset that survives the loss of a whole worker node."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml

from tests.cluster.processes import REPO, wait_until


def porelab(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


def synth_job(tmp_path: Path, name: str, count: int, shape: list[int]) -> Path:
    job = {"name": name, "seed": 4,
           "stages": [{"stage": "synth", "count": count, "shape": shape, "voxel_size_nm": [10, 10, 10],
                       "structure": {"families": {"solid_spheres": 1.0, "agglomerates": 1.0}, "porosity": [0.4, 0.6],
                                     "median_nm": 60.0},
                       "figures": False, "max_retries": 3}]}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def check_dataset(store: Path, count: int) -> None:
    """Every sample present, its labels at the porosity its record claims, its image rendered."""
    from pipeline.synth import dataset as dstore

    assert dstore.done_samples(store) == set(range(count))
    ds = dstore.open_dataset(store)
    labels, images = ds["labels"].values, ds["image"].values
    for i in range(count):
        rec = dstore.read_record(store, i)
        assert rec is not None and abs(rec["porosity"] - rec["target_porosity"]) <= 0.01, rec
        assert abs(labels[i].mean() - rec["porosity"]) < 0.03
        assert images[i].std() > 5


@pytest.mark.slow
def test_submit_to_ray_jobs_api(tmp_path: Path, ray_cluster) -> None:
    job = synth_job(tmp_path, "ray-submit", 4, [16, 32, 32])
    runs = tmp_path / "runs"
    no_token = {k: v for k, v in ray_cluster.env.items() if k != "RAY_AUTH_TOKEN"}
    refused = porelab(no_token, "submit", str(job), "--to", "ray", "--address", ray_cluster.dashboard, "--runs-dir", str(runs))
    assert refused.returncode == 2 and "RAY_AUTH_TOKEN" in refused.stderr, refused.stderr

    sub = porelab(ray_cluster.env, "submit", str(job), "--to", "ray", "--address", ray_cluster.dashboard, "--runs-dir", str(runs))
    assert sub.returncode == 0, sub.stderr
    job_id = sub.stdout.strip()
    assert job_id.startswith("porelab-ray-submit-")
    logs = porelab(ray_cluster.env, "logs", job_id, "--follow", "--runs-dir", str(runs), timeout=400)
    assert logs.returncode == 0, logs.stderr
    assert "ran synth" in logs.stdout, logs.stdout
    status = json.loads(porelab(ray_cluster.env, "status", job_id, "--runs-dir", str(runs), "--json").stdout)
    assert status["submission"]["state"] == "SUCCEEDED", status
    assert status["status"] == "done" and [s["status"] for s in status["stages"]] == ["done"]
    check_dataset(runs / "ray-submit" / "synth.zarr", 4)
    text = porelab(ray_cluster.env, "status", job_id, "--runs-dir", str(runs)).stdout
    assert f"ray {job_id}: SUCCEEDED" in text and "synth" in text, text


@pytest.mark.slow
def test_worker_node_killed_during_synth(tmp_path: Path, ray_cluster) -> None:
    """The worker node SIGKILLed while it makes samples: every sample is present, valid and as without the kill."""
    n = 8
    job = synth_job(tmp_path, "ray-kill", n, [32, 64, 64])
    runs = tmp_path / "runs"
    with ray_cluster.kill_node_when_running(ray_cluster.nodes[0], "ray::make_sample") as killed:
        run = porelab(ray_cluster.env, "run", str(job), "--ray", ray_cluster.address, "--runs-dir", str(runs), timeout=600)
    assert killed, "the worker node never ran make_sample, so it was not killed"
    assert run.returncode == 0, run.stderr
    wait_until(lambda: ray_cluster.alive_nodes() == 1, 90, "the head to count the killed node as dead", poll_s=1)
    store = runs / "ray-kill" / "synth.zarr"
    check_dataset(store, n)
    # the same samples made in one process: the retried ones are not corrupt
    env = dict(ray_cluster.env)
    local = yaml.safe_load(job.read_text())
    local["stages"][0]["executor"] = "local"
    (tmp_path / "local.yaml").write_text(yaml.safe_dump(local))
    ref = porelab(env, "run", str(tmp_path / "local.yaml"), "--runs-dir", str(tmp_path / "ref"), timeout=600)
    assert ref.returncode == 0, ref.stderr
    from pipeline.synth import dataset as dstore

    a, b = dstore.open_dataset(store), dstore.open_dataset(tmp_path / "ref" / "ray-kill" / "synth.zarr")
    np.testing.assert_array_equal(a["labels"].values, b["labels"].values)
    np.testing.assert_array_equal(a["image"].values, b["image"].values)


@pytest.mark.slow
def test_train2d_runs_across_both_nodes(tmp_path: Path, ray_cluster) -> None:
    """A job's train2d stage with two Ray Train workers on a head and a node of one CPU each: one worker on each."""
    job = {"name": "ray-train", "seed": 1, "stages": [
        {"stage": "synth", "count": 8, "shape": [16, 64, 64], "voxel_size_nm": [10, 10, 10], "figures": False,
         "structure": {"families": {"solid_spheres": 1.0}, "porosity": [0.4, 0.6], "median_nm": 80.0},
         "splits": {"train": 0.6, "val": 0.2, "test": 0.2}},
        {"stage": "train2d", "epochs": 1, "steps_per_epoch": 3, "batch_size": 4, "patch": [32, 32], "tile": [64, 64],
         "val_slices": 2, "net": {"features": 4, "depth": 2}, "workers": {"executor": "ray", "num_workers": 2}},
    ]}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(job))
    nodes = {"head": ray_cluster.head, "node": ray_cluster.nodes[0]}
    seen: set[str] = set()
    stop = threading.Event()

    def watch() -> None:  # which node's processes run a Ray Train worker
        while not stop.is_set() and len(seen) < 2:
            for name, service in nodes.items():
                for proc in service.descendants():
                    try:
                        if "RayTrainWorker" in " ".join(proc.cmdline()):
                            seen.add(name)
                    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                        continue
            stop.wait(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        run = porelab(ray_cluster.env, "run", str(tmp_path / "train.yaml"), "--ray", ray_cluster.address,
                      "--runs-dir", str(tmp_path / "runs"), timeout=900)
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert run.returncode == 0, run.stderr
    assert seen == {"head", "node"}, f"Ray Train workers ran on {sorted(seen)} only"
    from pipeline.models.folder import read_card

    card = read_card(tmp_path / "runs" / "ray-train" / "train2d" / "model")
    assert card.training["workers"] == 2 and card.training["executor"] == "ray"
