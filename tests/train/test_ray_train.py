"""Ray Train: DDP over two CPU workers, and a worker killed with SIGKILL resumes from the last checkpoint."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from pipeline.engine.ray_cluster import ray_session
from pipeline.models.folder import read_card
from pipeline.train.config import Train2DSettings
from pipeline.train.run import train_model


def _settings(**kw: object) -> Train2DSettings:
    base = dict(slices=3, patch=(32, 32), tile=(96, 96), batch_size=4, steps_per_epoch=5, val_slices=4,
                net={"features": 4, "depth": 2}, workers={"executor": "ray", "num_workers": 2, "max_failures": 2})
    return Train2DSettings(**{**base, **kw})


def _starts(root: Path) -> list[dict]:
    f = root / "starts.jsonl"
    return [json.loads(line) for line in f.read_text().splitlines()] if f.is_file() else []


def test_two_ray_workers_train_one_model(tiny_dataset: Path, tmp_path: Path) -> None:
    with ray_session(num_cpus=2):
        r = train_model(_settings(epochs=2), root=tmp_path / "t", dataset=tiny_dataset, seed=0, stage_hash="h", name="ddp")
    card = read_card(r.model)
    assert card.training["workers"] == 2 and card.training["executor"] == "ray"
    assert [row["epoch"] for row in r.history] == [1, 2]
    assert _starts(r.root) == [{**_starts(r.root)[0], "start_epoch": 0, "workers": 2, "checkpoint": None}]
    assert (r.root / "ray").is_dir()  # Ray's own checkpoint copies stay inside the run folder


def _train_workers() -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if "RayTrainWorker" in cmd:
            found.append(p)
    return found


@pytest.mark.slow
def test_a_worker_killed_mid_epoch_restarts_from_the_last_checkpoint(tiny_dataset: Path, tmp_path: Path) -> None:
    root = tmp_path / "t"
    result: dict = {}

    def train() -> None:
        try:
            result["r"] = train_model(_settings(epochs=4, steps_per_epoch=12), root=root, dataset=tiny_dataset, seed=0,
                                      stage_hash="h", name="kill")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            result["error"] = exc

    with ray_session(num_cpus=2):
        t = threading.Thread(target=train)
        t.start()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (root / "checkpoints" / "epoch-0002").is_dir():
            time.sleep(0.5)
        assert (root / "checkpoints" / "epoch-0002").is_dir(), "training did not reach epoch 2"
        time.sleep(1.0)  # inside epoch 3
        victims = _train_workers()
        assert victims, "no Ray Train worker process found"
        os.kill(victims[-1].pid, signal.SIGKILL)
        t.join(timeout=600)
    assert "error" not in result, result.get("error")
    starts = _starts(root)
    assert len(starts) >= 2 and starts[0]["start_epoch"] == 0 and starts[-1]["start_epoch"] >= 2
    assert [row["epoch"] for row in result["r"].history] == [1, 2, 3, 4]
