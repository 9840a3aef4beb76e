"""manifest.json of a run: the spec, its hash, seeds, versions, per-stage status and results."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

__all__ = ["Manifest", "machine_info", "git_commit", "package_versions"]


def machine_info() -> dict[str, Any]:
    """Host name, OS, CPU count and memory of this machine."""
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }


def git_commit(path: Path | None = None) -> str | None:
    """Commit of the porelab checkout, or None when it is not a git checkout."""
    here = path or Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=5).stdout.strip()
    return f"{commit}{'-dirty' if dirty else ''}"


def package_versions() -> dict[str, str]:
    """Versions of porelab and the packages its results depend on."""
    from pipeline.io.volume import provenance

    return provenance("versions")["versions"]


class Manifest:
    """The run's manifest.json, rewritten atomically after every change."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    @classmethod
    def load(cls, path: Path) -> Manifest | None:
        if not path.is_file():
            return None
        try:
            return cls(path, json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            return None

    def save(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        os.replace(tmp, self.path)

    def stage(self, name: str) -> dict[str, Any] | None:
        for entry in self.data.get("stages", []):
            if entry["name"] == name:
                return entry
        return None

    def set_stage(self, entry: dict[str, Any]) -> None:
        stages = self.data.setdefault("stages", [])
        for i, old in enumerate(stages):
            if old["name"] == entry["name"]:
                stages[i] = entry
                break
        else:
            stages.append(entry)
        self.save()


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
