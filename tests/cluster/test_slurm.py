"""`porelab submit --to slurm` against a real one-node SLURM: the job runs, status and logs follow it, a second
submission is refused while it runs, and a cancelled job resubmitted resumes from its markers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.io.volume import open_volume
from tests.cluster.processes import store_files, wait_until

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

    # A job held in the queue (PENDING for real) keeps the run folder: a second submission is refused.
    held = porelab(slurm.env, "submit", str(job), "--to", "slurm", "--runs-dir", str(runs), "--nodes", "1",
                   "--mem", "1G", "--sbatch-arg=--hold")
    assert held.returncode == 0, held.stderr
    held_id = held.stdout.strip()
    again = porelab(slurm.env, "submit", str(job), "--to", "slurm", "--runs-dir", str(runs), "--nodes", "1")
    assert again.returncode == 2
    assert f"slurm job {held_id} for this run folder is PENDING" in again.stderr and "scancel" in again.stderr, again.stderr
    slurm.run("scancel", held_id)
    assert slurm.wait_job(held_id, 30) == "CANCELLED"
    text = porelab(slurm.env, "status", str(runs / "slurm-tiny")).stdout
    assert f"slurm {held_id}: CANCELLED" in text and "ingest" in text, text


def test_dry_run_prints_the_script_and_writes_nothing(tmp_path: Path) -> None:
    job, _ = _ingest_job(tmp_path, "dry", (4, 8, 8), [2, 8, 8])
    runs = tmp_path / "runs"
    out = porelab(dict(os.environ), "submit", str(job), "--to", "slurm", "--dry-run", "--runs-dir", str(runs),
                  "--partition", "gpu", "--nodes", "3", "--time", "01:00:00", "--gpus-per-node", "2", "--sbatch-arg=--qos=high")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    directives = [line for line in lines if line.startswith("#SBATCH")]
    for wanted in ("--partition=gpu", "--nodes=3", "--time=01:00:00", "--gpus-per-node=2", "--qos=high", "--job-name=porelab-dry"):
        assert f"#SBATCH {wanted}" in directives, directives
    assert sum(d.startswith("#SBATCH --nodes") for d in directives) == 1  # the recipe's default is replaced
    # the run's settings come after the last directive (SLURM stops reading them at the first command)
    first_command = next(i for i, line in enumerate(lines) if line.startswith("export "))
    assert first_command > max(i for i, line in enumerate(lines) if line.startswith("#SBATCH"))
    assert f"set -- {job}" in out.stdout and f"export PORELAB_RUNS_DIR={runs}" in out.stdout
    assert "PORELAB_ENGINES=dask" in out.stdout and "export PORELAB_DASK_TLS" not in out.stdout
    assert not runs.exists()
    # bash reads it
    script = tmp_path / "s.sbatch"
    script.write_text(out.stdout)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def test_dry_run_hands_the_jobs_tls_certificates_to_the_cluster(tmp_path: Path) -> None:
    job, _ = _ingest_job(tmp_path, "tls", (4, 8, 8), [2, 8, 8])
    spec = yaml.safe_load(job.read_text())
    spec["engine"]["dask"] = {"tls": {"ca_file": "certs/ca.pem", "cert": "certs/me.pem", "key": "/abs/me.key"}}
    job.write_text(yaml.safe_dump(spec))
    out = porelab(dict(os.environ), "submit", str(job), "--to", "slurm", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert f"export PORELAB_DASK_TLS_CA={tmp_path / 'certs' / 'ca.pem'}" in out.stdout
    assert f"export PORELAB_DASK_TLS_CERT={tmp_path / 'certs' / 'me.pem'}" in out.stdout
    assert "export PORELAB_DASK_TLS_KEY=/abs/me.key" in out.stdout


def test_engines_follow_the_stages(tmp_path: Path) -> None:
    from pipeline.jobs.models import load_job
    from pipeline.submit.submission import job_engines

    def engines(stages: list[dict]) -> set[str]:
        (tmp_path / "j.yaml").write_text(yaml.safe_dump({"name": "e", "stages": stages}))
        return job_engines(load_job(tmp_path / "j.yaml"))

    np.save(tmp_path / "s.npy", np.zeros((4, 4, 4), np.uint8))
    ingest = {"stage": "ingest", "path": "s.npy", "voxel_size_nm": [1, 1, 1]}
    assert engines([ingest]) == {"dask"}
    assert engines([{"stage": "synth", "count": 2, "shape": [8, 8, 8]}]) == {"ray"}
    assert engines([{"stage": "synth", "count": 2, "shape": [8, 8, 8], "executor": "local"}, {"stage": "report"}]) == set()
    assert engines([{"stage": "synth", "count": 2, "shape": [8, 8, 8]}, {**ingest, "path": "synth"}]) == {"dask", "ray"}
    synth_local = {"stage": "synth", "count": 2, "shape": [8, 8, 8], "executor": "local"}
    assert engines([synth_local, {"stage": "train2d"}]) == {"ray"}  # Ray Train workers
    assert engines([synth_local, {"stage": "train2d", "workers": {"executor": "local"}}]) == set()


@pytest.mark.slow
def test_cancelled_job_resubmitted_resumes(tmp_path: Path, slurm) -> None:
    """scancel in the middle of a stage; the same submit again finishes only the blocks not done, same bytes."""
    n = 300
    job, data = _ingest_job(tmp_path, "slurm-resume", (n, 64, 48), [1, 64, 48])
    runs = tmp_path / "runs"
    args = ["submit", str(job), "--to", "slurm", "--runs-dir", str(runs), "--nodes", "1", "--mem", "2G",
            "--cpus-per-task", "1", "--workers-per-node", "1"]
    first = porelab(slurm.env, *args)
    assert first.returncode == 0, first.stderr
    job_id = first.stdout.strip()
    markers = lambda: list((runs / "slurm-resume" / ".work" / "ingest").glob("*.blocks-*/*.done"))  # noqa: E731
    wait_until(lambda: len(markers()) >= 40 or slurm.state(job_id) not in ("PENDING", "RUNNING"), 240,
               "40 blocks done", poll_s=0.05)
    slurm.run("scancel", job_id)
    assert slurm.wait_job(job_id, 120) == "CANCELLED"
    from pipeline.jobs.lock import lock_holder

    wait_until(lambda: lock_holder(runs / "slurm-resume") is None, 30, "the cancelled job's lock released")
    done_at_cancel = len(markers())
    assert 40 <= done_at_cancel < n, f"{done_at_cancel} blocks were done when the job was cancelled"
    manifest = json.loads((runs / "slurm-resume" / "manifest.json").read_text())
    assert manifest["stages"][0]["status"] == "failed" and "stopped" in manifest["stages"][0]["error"]

    second = porelab(slurm.env, *args)
    assert second.returncode == 0, second.stderr
    assert slurm.wait_job(second.stdout.strip(), 300) == "COMPLETED"
    manifest = json.loads((runs / "slurm-resume" / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert manifest["stages"][0]["metrics"]["blocks_computed"] == n - done_at_cancel

    clean = subprocess.run([sys.executable, "-m", "pipeline", "run", str(job), "--runs-dir", str(tmp_path / "clean")],
                           capture_output=True, text=True, env=slurm.env, timeout=300)
    assert clean.returncode == 0, clean.stderr
    resumed, ref = runs / "slurm-resume" / "ingest.zarr", tmp_path / "clean" / "slurm-resume" / "ingest.zarr"
    np.testing.assert_array_equal(open_volume(resumed).values, data)
    assert store_files(resumed) == store_files(ref)


@pytest.mark.slow
def test_jobqueue_config_runs_workers_on_slurm(tmp_path: Path, slurm, monkeypatch: pytest.MonkeyPatch) -> None:
    """cluster/slurm/jobqueue.yaml's SLURMCluster, sized to this node, gets its workers from SLURM."""
    pytest.importorskip("dask_jobqueue")
    import dask.config
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    for key in ("SLURM_CONF", "PATH", "PYTHONPATH"):
        monkeypatch.setenv(key, slurm.env[key])
    monkeypatch.setenv("TMPDIR", str(tmp_path / "node-tmp"))
    (tmp_path / "node-tmp").mkdir()
    cfg = yaml.safe_load((REPO / "cluster" / "slurm" / "jobqueue.yaml").read_text())["jobqueue"]["slurm"]
    with dask.config.set({f"jobqueue.slurm.{k}": v for k, v in cfg.items()}):
        with SLURMCluster(cores=1, processes=1, memory="1GiB", queue="debug",
                          scheduler_options={"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"},
                          log_directory=str(tmp_path / "logs")) as cluster:
            script = cluster.job_script()
            assert "--lifetime 230m" in script and 'DASK_TEMPORARY_DIRECTORY="$TMPDIR"' in script
            cluster.scale(jobs=1)
            with Client(cluster) as client:
                client.wait_for_workers(1, timeout=120)
                seen = client.run(lambda: (__import__("os").environ.get("SLURM_JOB_ID"), __import__("os").getcwd()))
                assert all(job for job, _ in seen.values()), seen  # the worker runs inside a SLURM job
                worker = next(iter(client.scheduler_info()["workers"].values()))
                assert worker["memory_limit"] == 2**30
                assert str(tmp_path / "node-tmp") in worker["local_directory"]
                assert client.submit(sum, [1, 2, 3]).result() == 6
