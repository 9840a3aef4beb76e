"""Deployment recipes in cluster/ and docker/: they parse, name real CLI verbs and flags, and the
local cluster scripts really start a cluster that `porelab run --dask` uses, then stop it."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import yaml

from pipeline.cli.main import build_parser

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
DOCKER = REPO / "docker"
YAML_FILES = sorted(p for d in (CLUSTER, DOCKER) for p in [*d.rglob("*.yaml"), *d.rglob("*.yml")])
SHELL_FILES = sorted(p for p in CLUSTER.rglob("*") if p.suffix in {".sh", ".sbatch"})
DOCKERFILES = sorted(DOCKER.glob("Dockerfile*[!e]"))  # Dockerfile.cpu, Dockerfile.gpu (not .dockerignore)
K8S_DIR = CLUSTER / "kubernetes"


def _docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _interpolate(text: str) -> str:
    """Compose-style ``${VAR:-default}`` to its default, ``$$`` to ``$``."""
    text = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", text)
    return text.replace("$$", "$")


def _porelab_invocations(text: str) -> list[list[str]]:
    """Every ``porelab VERB ...`` command line in a shell/YAML text, as argv after ``porelab``."""
    found = []
    for line in re.split(r"\n|&&|;|\|\|", text):
        line = re.sub(r"(^|\s)#.*$", "", line).strip().rstrip("\\").strip()  # comments out
        # porelab as the command word: first on the line, a path's last part, or after exec.
        match = re.search(r"(?:^|/|\bexec\s+|^[\"'(\[]\s*)porelab\s+([a-z][a-z-]*\b.*)$", line)
        if not match:
            continue
        try:
            argv = shlex.split(match.group(1), comments=True)
        except ValueError:  # the command sits inside a quoted string: drop its closing quote
            text = match.group(1).rstrip()
            argv = shlex.split(text[:-1] if text[-1:] in "'\"" else text, comments=True)
        found.append(argv)
    return found


def _code_blocks(markdown: str) -> str:
    """The fenced code blocks of a README (prose mentions of porelab are not commands)."""
    return "\n".join(re.findall(r"^```[a-z]*\n(.*?)^```", markdown, re.S | re.M))


# ---------------------------------------------------------------- parsing

def test_there_are_recipes() -> None:
    assert len(YAML_FILES) >= 6, YAML_FILES
    assert len(SHELL_FILES) >= 5, SHELL_FILES
    assert {p.name for p in DOCKERFILES} == {"Dockerfile.cpu", "Dockerfile.gpu"}


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_yaml_parses(path: Path) -> None:
    docs = _docs(path)
    assert docs, f"{path} holds no YAML document"


def _k8s_manifests() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        for doc in _docs(path):
            out.append((path, doc))
    return out


def test_kubernetes_manifests_have_identity() -> None:
    manifests = _k8s_manifests()
    assert len(manifests) >= 7
    for path, doc in manifests:
        assert isinstance(doc, dict), path
        assert doc.get("apiVersion"), f"{path.name}: no apiVersion"
        assert doc.get("kind"), f"{path.name}: no kind"
        if doc["kind"] != "Kustomization":
            assert doc.get("metadata", {}).get("name"), f"{path.name}: {doc['kind']} without metadata.name"


def test_kustomization_lists_every_manifest() -> None:
    kust = _docs(K8S_DIR / "kustomization.yaml")[0]
    assert kust["kind"] == "Kustomization"
    listed = set(kust["resources"])
    present = {p.name for p in K8S_DIR.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == present
    generated = {g["name"] for g in kust.get("configMapGenerator", [])}
    for gen in kust.get("configMapGenerator", []):
        for f in gen.get("files", []):
            assert (K8S_DIR / f.split("=", 1)[-1]).is_file(), f


def test_kubernetes_objects_wire_together() -> None:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for _, doc in _k8s_manifests():
        by_kind.setdefault(doc["kind"], []).append(doc)
    services = {d["metadata"]["name"]: d for d in by_kind["Service"]}
    assert "dask-scheduler" in services
    ports = {p["port"] for p in services["dask-scheduler"]["spec"]["ports"]}
    assert 8786 in ports
    deployments = {d["metadata"]["name"]: d for d in by_kind["Deployment"]}
    worker = deployments["dask-worker"]["spec"]["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["memory"] and worker["resources"]["requests"]["memory"]
    # Every pod selector matches its template's labels; services select existing pods.
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in by_kind["Deployment"]]
    for d in by_kind["Deployment"]:
        sel = d["spec"]["selector"]["matchLabels"]
        assert sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()
    sel = services["dask-scheduler"]["spec"]["selector"]
    assert any(sel.items() <= labels.items() for labels in pod_labels)
    # The Ray cluster uses token auth from a Secret named where the runner Job reads it too.
    ray = by_kind["RayCluster"][0]
    assert ray["metadata"]["name"] == "ray"  # KubeRay names the head service <name>-head-svc
    job = by_kind["Job"][0]
    job_env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert job_env["RAY_AUTH_MODE"]["value"] == "token"
    secret = job_env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
    groups = [ray["spec"]["headGroupSpec"], *ray["spec"]["workerGroupSpecs"]]
    for group in groups:
        env = {e["name"]: e for e in group["template"]["spec"]["containers"][0]["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == secret
    # The Job runs the porelab verb against the in-cluster service names.
    container = job["spec"]["template"]["spec"]["containers"][0]
    calls = _porelab_invocations(" ".join([*container.get("command", []), *container.get("args", [])]))
    assert calls == [["run", "/jobs/job.yaml", "--dask", "tcp://dask-scheduler:8786", "--ray", "ray-head-svc:6379"]]
    _check_invocation(calls[0], "porelab-job.yaml")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts["/jobs"]]["configMap"]["name"] == "porelab-job"
    # The runs PVC is mounted by the Job, the Dask workers and the Ray pods.
    pvc = by_kind["PersistentVolumeClaim"][0]["metadata"]["name"]

    def claims(pod_spec: dict[str, Any]) -> set[str]:
        return {v["persistentVolumeClaim"]["claimName"] for v in pod_spec.get("volumes", []) if "persistentVolumeClaim" in v}

    assert pvc in claims(job["spec"]["template"]["spec"])
    assert pvc in claims(deployments["dask-worker"]["spec"]["template"]["spec"])
    for group in groups:
        assert pvc in claims(group["template"]["spec"])


def test_kubernetes_job_file_is_a_valid_job(capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli.main import main

    assert main(["validate", str(K8S_DIR / "jobs" / "job.yaml")]) == 0, capsys.readouterr().err


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_renders() -> None:
    proc = subprocess.run(["kubectl", "kustomize", str(K8S_DIR)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    cms = [d for d in docs if d["kind"] == "ConfigMap"]
    assert len(cms) == 1 and "job.yaml" in cms[0]["data"]
    job = next(d for d in docs if d["kind"] == "Job")
    assert job["metadata"]["namespace"] == "porelab"
    names = {v["configMap"]["name"] for v in job["spec"]["template"]["spec"]["volumes"] if "configMap" in v}
    assert names == {cms[0]["metadata"]["name"]}  # the hashed generator name is wired into the Job


# ---------------------------------------------------------------- CLI references

def _check_invocation(argv: list[str], where: str) -> None:
    parser = build_parser()
    # "$@" and array expansions add nothing the recipe spells out; shell variables stand for values.
    argv = [a for a in argv if not re.fullmatch(r"\$[@*]|\$\{[@*][^}]*\}|\$\{\w+\[@\].*", a)]
    argv = [re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", "X", a) for a in argv]
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse reports unknown verbs / flags this way
        raise AssertionError(f"{where}: 'porelab {' '.join(argv)}' is not a valid command line") from exc
    assert args.command == argv[0]


def test_compose_services_and_runner_command() -> None:
    compose = _docs(DOCKER / "compose.yaml")[0]
    services = compose["services"]
    assert {"scheduler", "dask-worker-1", "dask-worker-2", "ray-head", "ray-worker", "porelab"} <= services.keys()
    for name in ("dask-worker-1", "dask-worker-2"):
        cmd = services[name]["command"]
        assert any(c.startswith("--memory-limit") for c in cmd), name
        assert services[name]["deploy"]["resources"]["limits"]["memory"], name
        assert "tcp://scheduler:8786" in cmd
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    for name in ("ray-head", "ray-worker", "porelab"):
        svc = services[name]
        assert svc["environment"]["RAY_AUTH_MODE"] == "token"
        assert "ray.env" in svc["env_file"]
        assert "RAY_AUTH_TOKEN" not in svc["environment"]  # the secret never sits in the compose file
    runner = _interpolate(" ".join(services["porelab"]["command"]))
    calls = _porelab_invocations(runner)
    assert calls == [["run", "jobs/demo.yaml", "--dask", "tcp://scheduler:8786", "--ray", "ray-head:6379"]]
    _check_invocation(calls[0], "docker/compose.yaml")
    assert "../runs:/work/runs" in services["porelab"]["volumes"]
    assert "../runs:/work/runs" in services["dask-worker-1"]["volumes"]


def test_every_porelab_command_in_the_recipes_parses() -> None:
    checked = 0
    texts = {path: path.read_text() for path in [*SHELL_FILES, *YAML_FILES]}
    texts.update({path: _code_blocks(path.read_text()) for path in [*CLUSTER.rglob("README.md"), DOCKER / "README.md"]})
    for path, text in texts.items():
        for argv in _porelab_invocations(_interpolate(text)):
            _check_invocation(argv, str(path.relative_to(REPO)))
            checked += 1
    assert checked >= 10


def test_unknown_flag_is_caught() -> None:
    """The checker itself fails on a wrong flag (so the test above can fail)."""
    with pytest.raises(AssertionError):
        _check_invocation(["run", "job.yaml", "--scheduler", "tcp://x:1"], "here")
    with pytest.raises(AssertionError):
        _check_invocation(["submit-everything", "job.yaml"], "here")


# ---------------------------------------------------------------- shell

@pytest.mark.parametrize("path", SHELL_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_shell_syntax(path: Path) -> None:
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck() -> None:
    proc = subprocess.run(["shellcheck", "-x", "-S", "warning", *map(str, SHELL_FILES)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_scripts_are_executable() -> None:
    for path in SHELL_FILES:
        if path.name != "common.sh":
            assert os.access(path, os.X_OK), f"{path} is not executable"


# ---------------------------------------------------------------- Dockerfiles

@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_pins_torch_through_constraints(path: Path) -> None:
    text = path.read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert re.findall(r"torch\s*[=<>~!]=", code) == [], "torch is pinned in the Dockerfile itself"
    installs = re.findall(r"pip install[^\n&]*", code)
    assert installs
    for cmd in installs:
        if "--upgrade pip" in cmd:
            continue
        assert "-c constraints.txt" in cmd, f"{path.name}: '{cmd}' does not use constraints.txt"
    assert "COPY pyproject.toml constraints.txt" in code
    assert re.search(r"^USER\s+porelab\s*$", code, re.M), "the image must run as a non-root user"
    assert re.search(r'^ENTRYPOINT\s+\["porelab"\]', code, re.M)
    for var in ("XDG_CACHE_HOME=/work/", "MPLCONFIGDIR=/work/", "PORELAB_CACHE=/work/", "DASK_TEMPORARY_DIRECTORY=/work/"):
        assert var in code, f"{path.name}: {var}... missing"
    extras = re.search(r'pip install -c constraints.txt "\.\[([a-z,]+)\]"', code)
    assert extras, f"{path.name}: porelab is not installed with extras"
    wanted = {"Dockerfile.cpu": {"ml", "slurm"}, "Dockerfile.gpu": {"ml", "gpu"}}[path.name]
    assert set(extras.group(1).split(",")) == wanted


def test_constraints_pin_torch_once() -> None:
    pins = [l for l in (REPO / "constraints.txt").read_text().splitlines() if l.strip().startswith("torch")]
    assert pins == ["torch==2.13.0"]


def test_dockerignore_keeps_venv_out_of_the_context() -> None:
    for path in DOCKERFILES:
        ignore = (path.parent / f"{path.name}.dockerignore").read_text().splitlines()
        assert "**" in ignore and "!pipeline/" in ignore


# ---------------------------------------------------------------- jobqueue config

def test_jobqueue_config_makes_a_slurm_job_script(tmp_path: Path) -> None:
    """The dask-jobqueue config is loaded by dask and gives a job script with our settings."""
    pytest.importorskip("dask_jobqueue")
    import dask.config
    from dask_jobqueue import SLURMCluster

    cfg = yaml.safe_load((CLUSTER / "slurm" / "jobqueue.yaml").read_text())
    # As DASK_CONFIG would: merged key by key over dask-jobqueue's defaults.
    with dask.config.set({f"jobqueue.slurm.{k}": v for k, v in cfg["jobqueue"]["slurm"].items()}):
        with SLURMCluster(scheduler_options={"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"},
                          log_directory=str(tmp_path / "logs")) as cluster:
            script = cluster.job_script()
    slurm = cfg["jobqueue"]["slurm"]
    assert "#SBATCH" in script
    assert "--memory-limit" in script and "--local-directory" in script
    assert str(slurm["local-directory"]) in script
    assert f"--nworkers {slurm['processes']}" in script
    assert "-t " + slurm["walltime"] in script or slurm["walltime"] in script


# ---------------------------------------------------------------- the local cluster, for real

def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def test_local_cluster_runs_a_job(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {**os.environ, "PORELAB_CLUSTER_DIR": str(state), "DASK_TEMPORARY_DIRECTORY": str(tmp_path / "dask")}
    start = subprocess.run(
        [str(CLUSTER / "local" / "start.sh"), "--workers", "1", "--memory-limit", "512MiB",
         "--dask-port", "0", "--dashboard-port", "0", "--no-ray"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    pids = [int(p.read_text()) for p in state.glob("*.pid")]
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        assert len(pids) == 2  # scheduler + one worker
        address = (state / "dask_address").read_text().strip()
        assert address.startswith("tcp://127.0.0.1:")
        # The scheduler and the worker listen on loopback only.
        for pid in pids:
            for conn in psutil.Process(pid).net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    assert conn.laddr.ip in {"127.0.0.1", "::ffff:127.0.0.1"}, conn
        status = subprocess.run([str(CLUSTER / "local" / "status.sh")], capture_output=True, text=True, env=env)
        assert status.returncode == 0 and "worker-1: running" in status.stdout

        data = np.random.default_rng(5).integers(0, 60000, (9, 24, 20), dtype=np.uint16)
        np.save(tmp_path / "stack.npy", data)
        job = {"name": "tiny", "engine": {"chunks": [4, 16, 16]},
               "stages": [{"stage": "ingest", "path": "stack.npy", "voxel_size_nm": [10, 5, 5]}]}
        (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
        runs = tmp_path / "runs"
        run = subprocess.run(
            [str(REPO / ".venv" / "bin" / "porelab"), "run", str(tmp_path / "job.yaml"),
             "--dask", address, "--runs-dir", str(runs)],
            capture_output=True, text=True, env=env, timeout=120,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        from pipeline.io.volume import open_volume

        np.testing.assert_array_equal(open_volume(runs / "tiny" / "ingest.zarr").values, data)
        # The blocks were computed on this scheduler's worker, not in a local cluster of the runner.
        from distributed import Client

        with Client(address, timeout=30) as client:
            prefixes = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
        assert prefixes, "the job ran no task on the local cluster"
    finally:
        stop = subprocess.run([str(CLUSTER / "local" / "stop.sh")], capture_output=True, text=True, env=env, timeout=120)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    deadline = time.monotonic() + 10
    while any(_group_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if _group_alive(p)], "processes of the local cluster are still running"
    assert not list(state.glob("*.pid"))


def test_start_rejects_bad_options(tmp_path: Path) -> None:
    env = {**os.environ, "PORELAB_CLUSTER_DIR": str(tmp_path / "state")}
    proc = subprocess.run([str(CLUSTER / "local" / "start.sh"), "--workers", "two"],
                          capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 2 and "--workers 'two'" in proc.stderr
    assert not list((tmp_path / "state").glob("*.pid")) if (tmp_path / "state").exists() else True
