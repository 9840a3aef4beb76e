"""Copy the models a ``jobs/train-default.yaml`` run trained into the package, with their test metrics.

    python -m pipeline.models.ship runs/train-default

The 2D model (stage ``segment-default``) and the refinement (``refine-default``)
become ``pipeline/models/builtin/segment-default`` and ``refine-default``; their
``model.json`` gets the evaluation on the held-out test stacks (overall and per
structure family, the threshold baseline beside them) under ``metrics.test``,
and the README card is generated again. The weights are copied byte for byte
(their sha256 is checked).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from pipeline.models.card import ModelCard, card_markdown
from pipeline.models.folder import CARD, DEFAULT_MODELS, WEIGHTS, _builtin_root, file_sha256, read_card

__all__ = ["ship", "MAX_BYTES"]

#: The shipped models together stay under this size.
MAX_BYTES = 20 * 2**20


def _test_metrics(evaluation: dict[str, Any], method: str) -> dict[str, Any]:
    keep = ("accuracy", "iou_pore", "iou_solid", "dice", "ce", "porosity_abs_error", "porosity_abs_error_max", "samples")
    out: dict[str, Any] = {}
    for name, tag in ((method, ""), ("baseline", "baseline ")):
        m = evaluation["methods"].get(name)
        if m is None:
            continue
        out[f"{tag}all"] = {k: m["overall"][k] for k in keep if k in m["overall"]}
        for fam, g in m["families"].items():
            out[f"{tag}{fam}"] = {k: g[k] for k in keep if k in g}
    return out


def ship(run: Path, *, stages: dict[str, str] | None = None, evaluation: str = "evaluate",
         methods: dict[str, str] | None = None, dest: Path | None = None) -> list[Path]:
    """Copy the trained models of ``run`` into the package (``dest``), with their test metrics.

    ``stages`` maps task -> training stage name; ``methods`` task -> the
    evaluated segmentation that used it (the refinement's is the pipeline's final result).
    """
    stages = stages or {"segment": "segment-default", "refine": "refine-default"}
    methods = methods or {"segment": "prob2d", "refine": "prob3d"}
    dest = dest or _builtin_root()
    ev_file = run / f"{evaluation}.json"
    ev = json.loads(ev_file.read_text()) if ev_file.is_file() else None
    written, total = [], 0
    for task, stage in stages.items():
        src = run / stage / "model"
        card = read_card(src)
        if file_sha256(src / WEIGHTS) != card.weights_sha256:
            raise RuntimeError(f"{src}: weights do not match model.json")
        name = DEFAULT_MODELS[task]
        metrics = dict(card.metrics)
        if ev is not None:
            metrics["test"] = _test_metrics(ev, methods[task])
            metrics["test_split"] = {"samples": ev["samples"], "families": ev["families"], "dataset": ev["dataset"]}
        new = ModelCard.model_validate({**card.model_dump(mode="json"), "name": name, "metrics": metrics})
        out = dest / name
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        shutil.copyfile(src / WEIGHTS, out / WEIGHTS)
        (out / CARD).write_text(new.to_json() + "\n")
        (out / "README.md").write_text(card_markdown(new))
        total += (out / WEIGHTS).stat().st_size
        written.append(out)
    if total > MAX_BYTES:
        raise RuntimeError(f"the shipped weights take {total / 2**20:.1f} MiB; keep them under {MAX_BYTES / 2**20:.0f} MiB")
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="run folder of jobs/train-default.yaml")
    args = ap.parse_args(argv)
    for p in ship(args.run):
        print(f"shipped {p}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
