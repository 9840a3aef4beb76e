"""How far a run is, read from outside the process that runs it: the manifest and the done markers.

Block writes keep ``blocks.json`` (their number of blocks) beside their
``*.done`` markers under ``RUN_DIR/.work/<stage>/``; synthetic datasets keep
one record per finished sample. Nothing here needs the scheduler.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.engine.blocks import TOTAL_NAME
from pipeline.jobs.manifest import Manifest

__all__ = ["StageRow", "stage_rows", "work_progress"]


@dataclass(frozen=True)
class StageRow:
    """One stage of a run as ``porelab status`` shows it.

    Attributes
    ----------
    name, kind : str
        The stage's output name and its kind.
    status : str
        ``waiting`` (not started), ``running``, ``done``, ``failed``.
    done, total : int or None
        Blocks (or samples) finished and in all, when the stage keeps markers.
    seconds : float or None
        Time it took (done, failed) or has taken so far (running), s.
    started : str or None
        When it started (ISO 8601).
    skipped : bool
        Up to date from an earlier run, not recomputed.
    error : str or None
        Why it failed.
    """

    name: str
    kind: str
    status: str
    done: int | None = None
    total: int | None = None
    seconds: float | None = None
    started: str | None = None
    skipped: bool = False
    error: str | None = None

    @property
    def percent(self) -> float | None:
        if self.status == "done":
            return 100.0
        if not self.total:
            return None
        return 100.0 * (self.done or 0) / self.total


def work_progress(work_dir: Path, count: int | None = None) -> tuple[int, int] | None:
    """``(done, total)`` of a stage's markers in ``work_dir``, or None when it keeps none.

    Block writes: every folder with a ``blocks.json``. Sample builds
    (``*.partial/records``): records written against ``count``.
    """
    if not work_dir.is_dir():
        return None
    done = total = 0
    found = False
    for meta in work_dir.rglob(TOTAL_NAME):
        try:
            total += int(json.loads(meta.read_text())["total"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        done += sum(1 for p in meta.parent.iterdir() if p.suffix == ".done")
        found = True
    if count:
        for records in work_dir.glob("*.partial/records"):
            done += sum(1 for _ in records.glob("s*.json"))
            total += count
            found = True
    return (done, total) if found else None


def _elapsed(started: str | None) -> float | None:
    if not started:
        return None
    try:
        t0 = datetime.strptime(started, "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        return None
    return max(0.0, (datetime.now(t0.tzinfo) - t0).total_seconds())


def _row(entry: dict[str, Any], run_dir: Path, spec_stage: dict[str, Any] | None, running: bool) -> StageRow:
    status = entry.get("status", "running")
    if status == "running" and not running:
        status = "stopped"  # the manifest says running but nothing holds the run: killed, cancelled, lost
    progress = None
    if status != "done" or not entry.get("skipped"):
        progress = work_progress(run_dir / ".work" / entry["name"], (spec_stage or {}).get("count"))
    seconds = entry.get("seconds")
    if status in ("running", "stopped") and seconds is None:
        seconds = _elapsed(entry.get("started")) if status == "running" else None
    return StageRow(
        name=entry["name"],
        kind=entry.get("kind", "?"),
        status=status,
        done=progress[0] if progress else None,
        total=progress[1] if progress else None,
        seconds=seconds,
        started=entry.get("started"),
        skipped=bool(entry.get("skipped")),
        error=entry.get("error"),
    )


def stage_rows(run_dir: str | Path, *, running: bool = True) -> list[StageRow]:
    """Every stage of the run's job in order, with its state, progress and timings.

    Parameters
    ----------
    run_dir : path
        The run folder.
    running : bool
        Whether a process holds the run now; when not, a stage the manifest
        still calls running is reported as ``stopped``.

    Returns
    -------
    list of StageRow
        Empty when the run has no manifest yet.
    """
    run_dir = Path(run_dir)
    manifest = Manifest.load(run_dir / "manifest.json")
    if manifest is None:
        return []
    entries = {e["name"]: e for e in manifest.data.get("stages", [])}
    rows = []
    for stage in manifest.data.get("spec", {}).get("stages", []):
        name = stage.get("name") or stage.get("stage")
        entry = entries.get(name)
        if entry is None:
            rows.append(StageRow(name=name, kind=stage.get("stage", "?"), status="waiting"))
        else:
            rows.append(_row(entry, run_dir, stage, running))
    return rows
