"""``porelab status``: a run's scheduler state and each stage's state, progress and timings."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.cli._common import add_parser

__all__ = ["register", "run_status"]


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub,
        "status",
        help="show a run's scheduler state and each stage's state, progress and timings",
        description=(
            "RUN_DIR or a JOB_ID that porelab submit printed: the scheduler's state of the job (SLURM, Ray,\n"
            "the detached Dask process) and, from the run's manifest and done markers, every stage's state,\n"
            "blocks done and time. Without an argument: one line per run folder under --runs-dir."
        ),
        example="porelab status 4242",
    )
    p.add_argument("ref", nargs="?", metavar="RUN_DIR|JOB_ID", help="a run folder or a submitted job's id")
    p.add_argument("--runs-dir", default="runs", metavar="DIR", help="folder of run folders (default: runs)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_run)


def run_status(run_dir: Path) -> dict[str, Any]:
    """The status of one run folder: manifest state, writer, latest submission and its scheduler state, stages."""
    from pipeline.jobs.lock import lock_holder
    from pipeline.jobs.manifest import Manifest
    from pipeline.jobs.progress import stage_rows
    from pipeline.submit.records import latest_submission, scheduler_state

    holder = lock_holder(run_dir)
    sub = latest_submission(run_dir)
    state = scheduler_state(sub) if sub is not None else None
    manifest = Manifest.load(run_dir / "manifest.json")
    status = manifest.data.get("status") if manifest else "not started"
    if status == "running" and holder is None:
        status = "stopped"  # the manifest was left running: killed, cancelled, its node lost
    return {
        "run_dir": str(run_dir),
        "status": status,
        "updated": manifest.data.get("updated") if manifest else None,
        "writer": holder,
        "submission": None if sub is None else {**asdict(sub), "state": state.state, "active": state.active, "detail": state.detail},
        "stages": [{**asdict(r), "percent": r.percent} for r in stage_rows(run_dir, running=holder is not None)],
    }


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def _print(status: dict[str, Any]) -> None:
    print(f"run       {status['run_dir']}: {status['status']}" + (f" (updated {status['updated']})" if status["updated"] else ""))
    sub = status["submission"]
    if sub is not None:
        detail = f" ({sub['detail']})" if sub["detail"] else ""
        print(f"job       {sub['scheduler']} {sub['job_id']}: {sub['state']}{detail}; submitted {sub['submitted']}")
    writer = status["writer"]
    if writer is not None:
        print(f"writer    pid {writer.get('pid')} on {writer.get('host')} since {writer.get('since')}")
    rows = status["stages"]
    if not rows:
        print("stages    none started yet")
        return
    table = [("stage", "kind", "state", "progress", "time")]
    for r in rows:
        if r["done"] is not None and r["total"]:
            progress = f"{r['done']}/{r['total']} ({r['percent']:.0f} %)"
        elif r["status"] == "done":
            progress = "up to date" if r["skipped"] else "100 %"
        else:
            progress = "-"
        table.append((r["name"], r["kind"], r["status"], progress, _seconds(r["seconds"])))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    for r in rows:
        if r["error"]:
            print(f"{r['name']} failed: {r['error']}")


def _run(args: argparse.Namespace) -> int:
    from pipeline.errors import UserError
    from pipeline.submit.records import find_submission

    runs = Path(args.runs_dir)
    if args.ref is None:
        folders = sorted(p for p in runs.iterdir() if (p / "manifest.json").exists() or (p / ".submit").is_dir()) if runs.is_dir() else []
        if not folders:
            raise UserError(f"{runs}: no run folders here; give a RUN_DIR or a JOB_ID, or --runs-dir DIR")
        statuses = [run_status(p) for p in folders]
        if args.json:
            print(json.dumps(statuses, indent=2))
            return 0
        for s in statuses:
            sub = s["submission"]
            job = f"{sub['scheduler']} {sub['job_id']}: {sub['state']}" if sub else "not submitted"
            print(f"{Path(s['run_dir']).name}  {s['status']}  {job}")
        return 0
    path = Path(args.ref)
    run_dir = path if path.is_dir() else Path(find_submission(args.ref, runs).run_dir)
    status = run_status(run_dir.resolve())
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        _print(status)
    return 0
