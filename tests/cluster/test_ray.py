"""Jobs on a real two-node Ray cluster on 127.0.0.1 with token auth: `porelab submit --to ray` through the Jobs
API, `status` and `logs` on it, and a synthetic dataset that survives the loss of a whole worker node."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
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
