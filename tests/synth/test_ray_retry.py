"""Ray fan-out: a worker killed with SIGKILL mid-build is retried; every sample ends up present and valid."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from pipeline.synth import dataset as dstore
from pipeline.synth.factory import build_dataset, plan_samples

N = 6


def _kill_one_sample_worker(killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the first Ray worker process seen running make_sample."""
    me = psutil.Process()
    while not stop.is_set() and not killed:
        for proc in me.children(recursive=True):
            try:
                title = " ".join(proc.cmdline())
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            if "ray::make_sample" in title:
                os.kill(proc.pid, signal.SIGKILL)
                killed.append(proc.pid)
                return
        time.sleep(0.02)


def test_sigkilled_worker_is_retried(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from pipeline.engine.ray_cluster import ray_session

    plans = plan_samples(N, seed=11, shape=(40, 64, 64), voxel_size_nm=(10.0, 10.0, 10.0),
                         families={"solid_spheres": 1.0, "agglomerates": 1.0},
                         structure_ranges={"porosity": (0.4, 0.6), "median_nm": 60.0, "sigma": 0.3},
                         render={"backend": "builtin"})
    out = tmp_path / "ray.zarr"
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_one_sample_worker, args=(killed, stop), daemon=True)
    ray_tmp = Path(tempfile.mkdtemp(prefix="plr-", dir="/tmp"))  # unix socket paths must stay short
    try:
        with ray_session(num_cpus=2, temp_dir=ray_tmp):
            killer.start()
            try:
                card = build_dataset(out, plans, seed=11, executor="ray", max_retries=3, figures=False)
            finally:
                stop.set()
                killer.join(timeout=5)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert killed, "no Ray worker running make_sample was seen, so none was killed"
    ds = dstore.open_dataset(out)
    assert card["achieved"]["samples"] == N and dstore.done_samples(out) == set(range(N))
    labels = ds["labels"].values
    images = ds["image"].values
    for i in range(N):
        rec = dstore.read_record(out, i)
        assert rec is not None and abs(rec["porosity"] - rec["target_porosity"]) <= 0.01
        assert abs(labels[i].mean() - rec["porosity"]) < 0.03
        assert images[i].std() > 5  # rendered, not left at the fill value
    # the same build without Ray gives the same data: the retried sample is not corrupt
    ref = tmp_path / "ref.zarr"
    build_dataset(ref, plans, seed=11, executor="local", figures=False)
    rds = dstore.open_dataset(ref)
    np.testing.assert_array_equal(rds["labels"].values, labels)
    np.testing.assert_array_equal(rds["image"].values, images)
