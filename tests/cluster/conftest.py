"""Real schedulers on 127.0.0.1 for the cluster tests: a one-node SLURM, a Dask scheduler with two workers,
a Ray head with one worker node. Every process a fixture starts is stopped by it, by PID, also when the
test fails.

Fixtures (usable by any test under tests/cluster/):

- ``slurm``: munged, slurmctld and slurmd with a minimal slurm.conf in a temporary folder;
  ``slurm.env`` points SLURM's commands at it. Skips, with the daemons' own words, where they cannot start.
- ``dask_cluster``: ``dask scheduler`` and two ``dask worker`` processes (each with its nanny);
  ``kill_worker()`` SIGKILLs a worker process (its nanny starts a new one), ``kill_scheduler()`` and
  ``start_scheduler()`` take the scheduler away and bring it back on the same port.
- ``ray_cluster``: ``ray start --head --node-ip-address 127.0.0.1`` with token auth and its dashboard (Jobs
  API) on 127.0.0.1, plus one worker node (``nodes[0]``); ``kill_node(node)`` SIGKILLs every process of a
  node, ``kill_node_when_running(node, "ray::TASK")`` does it as soon as that node runs the task,
  ``add_node()`` starts another.

Waiting for a stage to be part way done: :func:`tests.cluster.processes.wait_until` on its markers
(``RUN_DIR/.work/<stage>/<store>.blocks-*/*.done``); comparing stores byte for byte: ``store_files``.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.cluster.processes import Service, Services, base_env, free_port, wait_until


# ---------------------------------------------------------------- SLURM

SLURM_CONF = """\
ClusterName=porelabtest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SwitchType=switch/none
MpiDefault=none
MailProg=/bin/true
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
KillWait=10
MinJobAge=600
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Slurm:
    """A one-node SLURM cluster on 127.0.0.1 (node ``localhost``, partition ``debug``)."""

    root: Path
    env: dict[str, str]
    cpus: int
    memory_mb: int

    def run(self, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(argv), capture_output=True, text=True, env=self.env, timeout=timeout)
        if check:
            assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stdout}{proc.stderr}"
        return proc

    def state(self, job_id: str) -> str:
        out = self.run("scontrol", "show", "job", "--oneliner", job_id, check=False).stdout
        for word in out.split():
            if word.startswith("JobState="):
                return word.split("=", 1)[1]
        return "UNKNOWN"

    def wait_job(self, job_id: str, timeout_s: float = 300) -> str:
        """Wait until the job has ended; returns its final state."""
        final = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
        wait_until(lambda: self.state(job_id) in final, timeout_s, f"SLURM job {job_id}", poll_s=0.5,
                   log=self.root / "slurmctld.log")
        return self.state(job_id)


def _slurm_missing() -> str | None:
    missing = [tool for tool in ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel")
               if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists()]
    return f"SLURM is not installed ({', '.join(missing)} missing; apt-get install slurm-wlm munge)" if missing else None


def _sbin(tool: str) -> str:
    return shutil.which(tool) or str(Path("/usr/sbin") / tool)


@pytest.fixture
def slurm(tmp_path: Path) -> Iterator[Slurm]:
    why = _slurm_missing()
    if why:
        pytest.skip(why)
    # unix socket paths must stay under 108 bytes: a short folder of its own
    root = Path(tempfile.mkdtemp(prefix="plslurm-", dir="/tmp"))
    root.chmod(0o755)  # munged wants its socket folder reachable by the clients
    for sub in ("state", "spool"):
        (root / sub).mkdir()
    services = Services()
    cpus = max(1, len(os.sched_getaffinity(0)))
    memory_mb = 4096
    env = {**base_env(tmp_path), "SLURM_CONF": str(root / "slurm.conf")}
    try:
        subprocess.run([_sbin("mungekey"), "--create", "--keyfile", str(root / "munge.key")], check=True,
                       capture_output=True, timeout=30)
        (root / "munge.key").chmod(0o600)
        munged = services.add(Service.start("munged", [
            _sbin("munged"), "--foreground", "--force", f"--socket={root}/munge.sock", f"--key-file={root}/munge.key",
            f"--pid-file={root}/munged.pid", f"--seed-file={root}/munge.seed", f"--log-file={root}/munged.log",
        ], root / "munged.out", env=env))
        try:
            wait_until(lambda: (root / "munge.sock").exists(), 15, "munged", alive=munged.alive, log=root / "munged.out")
        except AssertionError as exc:
            pytest.skip(f"munged cannot start here: {str(exc)[-300:]}")
        (root / "slurm.conf").write_text(SLURM_CONF.format(
            ctld_port=free_port(), slurmd_port=free_port(), user=getpass.getuser(), munge_socket=root / "munge.sock",
            root=root, cpus=cpus, memory_mb=memory_mb))
        ctld = services.add(Service.start("slurmctld", [_sbin("slurmctld"), "-D", "-i", "-f", str(root / "slurm.conf")],
                                          root / "slurmctld.out", env=env))
        slurmd = services.add(Service.start("slurmd", [_sbin("slurmd"), "-D", "-N", "localhost", "-f", str(root / "slurm.conf")],
                                            root / "slurmd.out", env=env))
        cluster = Slurm(root, env, cpus, memory_mb)

        def idle() -> bool:
            out = cluster.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.split()
            return out[:1] == ["idle"]

        try:
            wait_until(idle, 30, "the SLURM node", poll_s=0.3,
                       alive=lambda: ctld.alive() and slurmd.alive(), log=root / "slurmd.out")
        except AssertionError as exc:
            logs = "".join((root / f).read_text(errors="replace")[-400:] for f in ("slurmctld.out", "slurmd.out") if (root / f).exists())
            pytest.skip(f"the SLURM daemons cannot start here ({str(exc).splitlines()[0]}): {logs}")
        yield cluster
    finally:
        try:
            if (root / "slurm.conf").exists() and any(s.alive() for s in services.items):
                subprocess.run(["scancel", "--full", "--user", getpass.getuser()], env=env, capture_output=True, timeout=30)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    queue = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True, timeout=30)
                    if queue.returncode != 0 or not queue.stdout.strip():
                        break
                    time.sleep(0.5)
        finally:
            services.stop_all()
            shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- Dask


@dataclass
class DaskCluster:
    """``dask scheduler`` and ``dask worker`` processes (each a nanny with its worker process) on 127.0.0.1."""

    root: Path
    port: int
    env: dict[str, str]
    services: Services
    scheduler: Service | None = None
    workers: list[Service] = field(default_factory=list)
    extra_args: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        scheme = "tls" if "--tls-cert" in self.extra_args else "tcp"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start_scheduler(self) -> None:
        """Start a scheduler on this cluster's port (again, after :meth:`kill_scheduler`)."""
        n = sum(s.name.startswith("scheduler") for s in self.services.items)
        log = self.root / f"scheduler-{n}.log"
        self.scheduler = self.services.add(Service.start(f"scheduler-{n}", [
            sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(self.port),
            "--dashboard-address", "127.0.0.1:0", *self.extra_args], log, env=self.env))
        wait_until(lambda: "Scheduler at:" in log.read_text(errors="replace"), 60, "the Dask scheduler",
                   alive=self.scheduler.alive, log=log)

    def start_workers(self, n: int = 2, memory_limit: str = "1GiB") -> None:
        """Start ``n`` more single-threaded workers and wait until the scheduler has all of them."""
        for _ in range(n):
            i = len(self.workers)
            self.workers.append(self.services.add(Service.start(f"worker-{i}", [
                sys.executable, "-m", "distributed.cli.dask_worker", self.address, "--host", "127.0.0.1",
                "--nworkers", "1", "--nthreads", "1", "--memory-limit", memory_limit, "--no-dashboard",
                "--name", f"w{i}", "--local-directory", str(self.root / f"w{i}"), *self.extra_args],
                self.root / f"worker-{i}.log", env=self.env)))
        wait_until(lambda: self.n_workers() >= len([w for w in self.workers if w.alive()]), 90, f"{n} Dask workers",
                   poll_s=0.5, log=self.workers[-1].log)

    def n_workers(self) -> int:
        """Workers the scheduler knows, as its log tells (no client of ours stays connected)."""
        assert self.scheduler is not None
        text = self.scheduler.log.read_text(errors="replace")
        return text.count("Register worker") - text.count("Remove worker")

    def worker_processes(self) -> list[psutil.Process]:
        """The worker processes the nannies run now (what a SIGKILL should hit)."""
        out = []
        for nanny in self.workers:
            if nanny.alive():
                nanny.remember_tree()
                out += [p for p in nanny.descendants() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        return out

    def kill_worker(self) -> int:
        """SIGKILL one worker process (its nanny starts a new one); returns its pid."""
        victims = self.worker_processes()
        assert victims, "no worker process to kill"
        victims[0].send_signal(signal.SIGKILL)
        return victims[0].pid

    def kill_scheduler(self) -> None:
        """SIGKILL the scheduler; the workers lose it (and are stopped, as a scheduler's loss ends them)."""
        assert self.scheduler is not None and self.scheduler.alive()
        self.scheduler.proc.send_signal(signal.SIGKILL)
        self.scheduler.proc.wait(timeout=30)


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[DaskCluster]:
    """A scheduler and two 1 GiB single-threaded workers on 127.0.0.1; everything stopped by PID afterwards."""
    root = tmp_path / "dask-cluster"
    root.mkdir()
    cluster = DaskCluster(root, free_port(), base_env(tmp_path), Services())
    try:
        cluster.start_scheduler()
        cluster.start_workers(2)
        yield cluster
    finally:
        cluster.services.stop_all()


# ---------------------------------------------------------------- Ray


@dataclass
class RayCluster:
    """A Ray head (token auth, dashboard with the Jobs API) and worker nodes, all on 127.0.0.1."""

    root: Path
    port: int
    dashboard_port: int
    token: str
    env: dict[str, str]
    services: Services
    head: Service | None = None
    nodes: list[Service] = field(default_factory=list)

    @property
    def address(self) -> str:
        """The GCS address (``porelab run --ray``)."""
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard(self) -> str:
        """The Jobs API (``porelab submit --to ray --address``)."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _ports(self) -> list[str]:
        # every node of one machine needs its own agent and metrics ports
        return ["--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
                "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
                "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port())]

    def start_head(self, num_cpus: int = 1) -> None:
        self.head = self.services.add(Service.start("ray-head", [
            str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
            "--port", str(self.port), "--num-cpus", str(num_cpus), "--include-dashboard", "true",
            "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard_port),
            "--ray-client-server-port", str(free_port()), "--temp-dir", str(self.root / "tmp"),
            "--disable-usage-stats", *self._ports()], self.root / "head.log", env=self.env))
        wait_until(lambda: self.alive_nodes() >= 1, 120, "the Ray head", poll_s=0.5, alive=self.head.alive,
                   log=self.head.log)

    def add_node(self, num_cpus: int = 1) -> Service:
        """Start one more worker node and wait until the cluster counts it."""
        want = self.alive_nodes() + 1
        node = self.services.add(Service.start(f"ray-node-{len(self.nodes)}", [
            str(Path(sys.executable).parent / "ray"), "start", "--block", "--address", self.address,
            "--node-ip-address", "127.0.0.1", "--num-cpus", str(num_cpus), "--disable-usage-stats", *self._ports()],
            self.root / f"node-{len(self.nodes)}.log", env=self.env))
        self.nodes.append(node)
        wait_until(lambda: self.alive_nodes() >= want, 120, "a Ray worker node", poll_s=0.5, alive=node.alive, log=node.log)
        node.remember_tree()
        return node

    def alive_nodes(self) -> int:
        """Nodes the cluster counts as alive (asked through the dashboard's state API)."""
        import urllib.request

        request = urllib.request.Request(f"{self.dashboard}/nodes?view=summary",
                                         headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                data = json.loads(resp.read())
        except (OSError, ValueError):
            return 0
        summary = data.get("data", {}).get("summary", [])
        return sum(1 for n in summary if n.get("raylet", {}).get("state") == "ALIVE")

    def kill_node(self, node: Service) -> list[int]:
        """SIGKILL every process of a worker node (its raylet, its workers, ``ray start`` itself), by PID."""
        victims = node.descendants()
        pids = [p.pid for p in victims] + [node.pid]
        for p in victims:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(timeout=30)
        return pids


    @contextlib.contextmanager
    def kill_node_when_running(self, node: Service, task: str) -> Iterator[list[int]]:
        """While the block runs, SIGKILL ``node`` as soon as one of its processes runs ``task``.

        ``task`` is a Ray worker's process title (``ray::make_sample``, or an actor's class such
        as ``ray::RayTrainWorker``). Yields the list of killed pids, empty if it never ran there.
        """
        killed: list[int] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                for proc in node.descendants():
                    try:
                        title = " ".join(proc.cmdline())
                    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                        continue
                    if task in title:
                        killed.extend(self.kill_node(node))
                        return
                stop.wait(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            yield killed
        finally:
            stop.set()
            watcher.join(timeout=30)


@pytest.fixture
def ray_cluster(tmp_path: Path) -> Iterator[RayCluster]:
    """A Ray head with token auth and one worker node (one CPU each) on 127.0.0.1; stopped by PID afterwards."""
    pytest.importorskip("ray")
    # Ray's unix socket paths must stay under 108 bytes: a short folder of its own
    root = Path(tempfile.mkdtemp(prefix="plray-", dir="/tmp"))
    token = secrets.token_hex(32)
    env = {**base_env(tmp_path), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    cluster = RayCluster(root, free_port(), free_port(), token, env, Services())
    try:
        cluster.start_head()
        cluster.add_node()
        yield cluster
    finally:
        cluster.services.stop_all()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def tls_dask_cluster(tmp_path: Path) -> Iterator[tuple[DaskCluster, dict[str, Path]]]:
    """A scheduler and one worker that speak TLS only, with a fresh CA and certificate (PEM files in ``certs``)."""
    from distributed.security import Security

    temporary = Security.temporary()  # a self-signed CA and a certificate it signed, as PEM text
    certs = {"ca_file": tmp_path / "ca.pem", "cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem"}
    certs["ca_file"].write_text(temporary.tls_ca_file)
    certs["cert"].write_text(temporary.tls_client_cert)
    certs["key"].write_text(temporary.tls_client_key)
    certs["key"].chmod(0o600)
    root = tmp_path / "dask-tls"
    root.mkdir()
    args = ["--protocol", "tls", "--tls-ca-file", str(certs["ca_file"]), "--tls-cert", str(certs["cert"]),
            "--tls-key", str(certs["key"])]
    cluster = DaskCluster(root, free_port(), base_env(tmp_path), Services(), extra_args=args)
    try:
        cluster.start_scheduler()
        cluster.start_workers(1)
        yield cluster, certs
    finally:
        cluster.services.stop_all()
