"""SLURM: the batch script of a job (from ``cluster/slurm/porelab.sbatch``), ``sbatch``, and the job's state.

The script written into the run folder is the recipe with its ``#SBATCH``
lines set from the options given, followed by this run's settings (checkout,
virtual environment, runs folder, engines, job file), so that
``sbatch RUN_DIR/.submit/slurm.sbatch`` alone runs the job again.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import UserError
from pipeline.submit.records import SchedulerState

__all__ = ["SlurmOptions", "recipe_path", "render_sbatch", "sbatch", "slurm_state", "current_venv", "ACTIVE_STATES"]

#: SLURM job states in which the job may still write its run folder.
ACTIVE_STATES = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
     "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}
)
_DIRECTIVE = re.compile(r"^#SBATCH\s+(--[a-z-]+|-[A-Za-z])(?:[= ]\s*(.*))?$")
_SHORT = {"-p": "--partition", "-N": "--nodes", "-t": "--time", "-J": "--job-name", "-o": "--output",
          "-A": "--account", "-c": "--cpus-per-task", "-n": "--ntasks", "-e": "--error"}


@dataclass
class SlurmOptions:
    """Resources of the allocation; None keeps the recipe's ``#SBATCH`` default.

    Attributes
    ----------
    partition, account : str, optional
        Where the job runs and who pays for it.
    nodes : int, optional
        Nodes of the allocation (the first runs the schedulers and the driver).
    time : str, optional
        Wall-clock limit, SLURM's format (``04:00:00``, ``1-00:00:00``).
    mem : str, optional
        Memory per node (``64G``); each Dask worker gets 90 % of it divided by
        the workers per node.
    cpus_per_task : int, optional
        CPUs per node (one task per node).
    gpus_per_node : int, optional
        GPUs per node, handed to the Ray nodes.
    workers_per_node : int, optional
        Dask worker processes per node (the recipe's default is 4).
    extra : list of str
        More ``sbatch`` options, written as ``#SBATCH`` lines as given
        (``--qos=debug``, ``--constraint=skylake``).
    """

    partition: str | None = None
    nodes: int | None = None
    time: str | None = None
    mem: str | None = None
    cpus_per_task: int | None = None
    account: str | None = None
    gpus_per_node: int | None = None
    workers_per_node: int | None = None
    extra: list[str] = field(default_factory=list)

    def directives(self) -> dict[str, str]:
        """``--option`` -> value of the options given."""
        out = {}
        for name in ("partition", "nodes", "time", "mem", "cpus_per_task", "account", "gpus_per_node"):
            value = getattr(self, name)
            if value is not None:
                out["--" + name.replace("_", "-")] = str(value)
        for item in self.extra:
            if not item.startswith("--"):
                raise UserError(f"--sbatch-arg {item!r} is not a long sbatch option; expected e.g. --qos=debug")
            key, _, value = item.partition("=")
            if key in ("--output", "--error", "--job-name"):
                raise UserError(f"--sbatch-arg {item!r}: porelab sets {key} itself (the job's output goes to the run folder)")
            out[key] = value
        return out


def recipe_path() -> Path:
    """``cluster/slurm/porelab.sbatch`` of the checkout this porelab was imported from."""
    return Path(__file__).resolve().parents[2] / "cluster" / "slurm" / "porelab.sbatch"


def _option(line: str) -> str | None:
    match = _DIRECTIVE.match(line.strip())
    if not match:
        return None
    return _SHORT.get(match.group(1), match.group(1))


def render_sbatch(
    template: str,
    *,
    job_file: Path,
    run_dir: Path,
    runs_dir: Path,
    engines: set[str],
    options: SlurmOptions,
    home: Path,
    venv: Path,
    run_args: Sequence[str] = (),
    dask_tls: dict[str, Path | None] | None = None,
) -> str:
    """The batch script of one run: ``template`` with its directives set and this run's settings appended to them.

    Parameters
    ----------
    template : str
        Text of a recipe with ``#SBATCH`` lines and the ``PORELAB_*`` settings
        of ``cluster/slurm/porelab.sbatch``.
    job_file, run_dir, runs_dir : Path
        Absolute paths (they are read on the compute nodes).
    engines : set of {"dask", "ray"}
        Clusters the job's stages need.
    options : SlurmOptions
        Directives that replace the recipe's.
    home, venv : Path
        The porelab checkout and its virtual environment.
    run_args : sequence of str
        More ``porelab run`` arguments (``--fresh``).
    dask_tls : dict, optional
        ``ca_file``, ``cert``, ``key`` (absolute paths): the allocation's Dask
        scheduler and workers use TLS with these files.
    """
    lines = template.splitlines()
    directives = {
        "--job-name": f"porelab-{run_dir.name}",
        "--output": str(run_dir / ".submit" / "slurm-%j.out"),
        **options.directives(),
    }
    # SLURM reads #SBATCH lines only before the first command: the settings go right after them
    found = [i for i, line in enumerate(lines) if line.startswith("#SBATCH")]
    last = found[-1] if found else (0 if lines and lines[0].startswith("#!") else -1)
    head = [line for line in lines[: last + 1] if _option(line) not in directives]
    given = [f"#SBATCH {k}={v}" if v else f"#SBATCH {k}" for k, v in directives.items()]
    settings = {
        "PORELAB_HOME": shlex.quote(str(home)),
        "PORELAB_VENV": shlex.quote(str(venv)),
        "PORELAB_RUNS_DIR": shlex.quote(str(runs_dir)),
        "PORELAB_ENGINES": ",".join(sorted(engines)) or "none",
        # the services' logs, one folder per SLURM job, beside the batch output
        "PORELAB_LOGS": shlex.quote(str(run_dir / ".submit")) + '/slurm-"$SLURM_JOB_ID"',
    }
    if options.workers_per_node is not None:
        settings["PORELAB_WORKERS_PER_NODE"] = str(options.workers_per_node)
    for key, var in (("ca_file", "PORELAB_DASK_TLS_CA"), ("cert", "PORELAB_DASK_TLS_CERT"), ("key", "PORELAB_DASK_TLS_KEY")):
        if dask_tls and dask_tls.get(key) is not None:
            settings[var] = shlex.quote(str(dask_tls[key]))
    block = ["# ---- written by porelab submit for this run (sbatch this file again to resume it) ----"]
    block += [f"export {key}={value}" for key, value in settings.items()]
    block.append(f"set -- {shlex.join([str(job_file), *run_args])}")
    block.append("# ----")
    return "\n".join([*head, *given, *block, *lines[last + 1 :]]) + "\n"


def _slurm_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise UserError(f"{name} is not on PATH; run porelab submit --to slurm on a SLURM login node (or use --dry-run)")
    return path


def sbatch(script: Path, *, cwd: Path) -> str:
    """Submit ``script`` with ``sbatch``; returns SLURM's job id.

    Raises
    ------
    UserError
        When sbatch is missing or refuses the job (its message is kept).
    """
    proc = subprocess.run([_slurm_tool("sbatch"), "--parsable", str(script)], capture_output=True, text=True, cwd=cwd, timeout=120)
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise UserError(f"sbatch refused {script}: {why}")
    job_id = proc.stdout.strip().split(";", 1)[0]
    if not job_id.isdigit():
        raise UserError(f"sbatch gave no job id for {script} (it printed {proc.stdout.strip()!r})")
    return job_id


def slurm_state(job_id: str) -> SchedulerState:
    """SLURM's state of a job: ``scontrol`` while SLURM remembers it, then ``sacct``, else UNKNOWN."""
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        return SchedulerState("UNKNOWN", False, "scontrol is not on PATH")
    proc = subprocess.run([scontrol, "show", "job", "--oneliner", job_id], capture_output=True, text=True, timeout=60)
    match = re.search(r"\bJobState=(\S+)", proc.stdout)
    if proc.returncode == 0 and match:
        state = match.group(1)
        reason = re.search(r"\bReason=(\S+)", proc.stdout)
        detail = reason.group(1) if reason and reason.group(1) != "None" else ""
        return SchedulerState(state, state in ACTIVE_STATES, detail)
    sacct = shutil.which("sacct")
    if sacct is not None:
        proc = subprocess.run([sacct, "-n", "-X", "-P", "-j", job_id, "-o", "State"], capture_output=True, text=True, timeout=60)
        words = proc.stdout.split()
        if proc.returncode == 0 and words:
            state = words[0].rstrip("+")
            return SchedulerState(state, state in ACTIVE_STATES)
    return SchedulerState("UNKNOWN", False, "SLURM no longer knows this job; it has ended")


def current_venv() -> Path:
    """The virtual environment (or installation prefix) of this Python."""
    return Path(sys.prefix)
