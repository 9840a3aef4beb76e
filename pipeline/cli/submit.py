"""``porelab submit``: hand a job to SLURM, a Ray cluster or a Dask scheduler, and come back for it."""

from __future__ import annotations

import argparse
import sys

from pipeline.cli._common import add_parser

__all__ = ["register"]

_TARGETS = ("slurm", "ray", "dask")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub,
        "submit",
        help="submit a job to SLURM (sbatch), a Ray cluster (Jobs API) or a Dask scheduler; prints its job id",
        description=(
            "Submit a job and return at once; 'porelab status JOB_ID' and 'porelab logs JOB_ID' follow it.\n"
            "  --to slurm   writes RUN_DIR/.submit/slurm.sbatch from cluster/slurm/porelab.sbatch (Dask and/or\n"
            "               Ray inside the allocation, as the stages need) and submits it with sbatch\n"
            "  --to ray     submits 'porelab run' through the Ray Jobs API at --address http://HOST:8265\n"
            "               (token from RAY_AUTH_TOKEN with RAY_AUTH_MODE=token), the checkout as working dir\n"
            "  --to dask tcp://HOST:PORT  runs the job against that scheduler from a detached process,\n"
            "               its log in RUN_DIR/.submit/\n"
            "A run folder that is being written, or has a job queued or running, is refused. The job file,\n"
            "its inputs and the runs folder must be readable where the job runs (a shared filesystem)."
        ),
        example="porelab submit jobs/demo.yaml --to slurm --partition compute --nodes 2 --time 02:00:00",
    )
    p.add_argument("job", help="YAML job file")
    p.add_argument("--to", nargs="+", required=True, metavar=("SCHEDULER", "ADDRESS"),
                   help="slurm, ray or dask (dask takes the scheduler address after it)")
    p.add_argument("--address", help="Ray dashboard (http://HOST:8265) or Dask scheduler (tcp://HOST:PORT)")
    p.add_argument("--runs-dir", default="runs", metavar="DIR", help="folder of run folders (default: runs)")
    p.add_argument("--fresh", action="store_true", help="redo every stage (porelab run --fresh)")
    p.add_argument("--dask", metavar="ADDRESS", help="--to ray: run the array stages on this Dask scheduler")
    g = p.add_argument_group("SLURM (--to slurm)")
    g.add_argument("--partition", help="partition (queue)")
    g.add_argument("--account", help="account to charge")
    g.add_argument("--nodes", type=int, help="nodes of the allocation (the recipe's default: 2)")
    g.add_argument("--time", help="wall-clock limit, e.g. 04:00:00")
    g.add_argument("--mem", help="memory per node, e.g. 64G (Dask workers get 90 %% of it)")
    g.add_argument("--cpus-per-task", type=int, metavar="N", help="CPUs per node")
    g.add_argument("--gpus-per-node", type=int, metavar="N", help="GPUs per node (for the Ray nodes)")
    g.add_argument("--workers-per-node", type=int, metavar="N", help="Dask worker processes per node (default 4)")
    g.add_argument("--sbatch-arg", action="append", default=[], metavar="--OPT=VALUE",
                   help="another sbatch option (repeatable), e.g. --sbatch-arg=--qos=debug")
    g.add_argument("--script", metavar="FILE", help="batch recipe to use instead of cluster/slurm/porelab.sbatch")
    g.add_argument("--dry-run", action="store_true", help="print the batch script; write and submit nothing")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pipeline.errors import UserError
    from pipeline.submit.slurm import SlurmOptions
    from pipeline.submit.submission import submit_job

    to, *rest = args.to
    if to not in _TARGETS:
        raise UserError(f"--to {to!r} is not a scheduler; expected one of {', '.join(_TARGETS)}")
    if len(rest) > 1 or (rest and to != "dask"):
        raise UserError(f"--to {' '.join(args.to)}: only dask takes an address after it; use --address for ray")
    address = rest[0] if rest else args.address
    options = SlurmOptions(partition=args.partition, nodes=args.nodes, time=args.time, mem=args.mem,
                           cpus_per_task=args.cpus_per_task, account=args.account, gpus_per_node=args.gpus_per_node,
                           workers_per_node=args.workers_per_node, extra=list(args.sbatch_arg))
    result = submit_job(args.job, to=to, address=address, runs_dir=args.runs_dir, fresh=args.fresh, slurm=options,
                        script=args.script, dask_address=args.dask, dry_run=args.dry_run)
    if isinstance(result, str):
        print(result, end="")
        return 0
    print(result.job_id)
    where = "" if args.runs_dir == "runs" else f" --runs-dir {args.runs_dir}"
    print(f"submitted to {result.scheduler}: run folder {result.run_dir}; follow it with "
          f"'porelab status {result.job_id}{where}' and 'porelab logs {result.job_id}{where} --follow'", file=sys.stderr)
    return 0
