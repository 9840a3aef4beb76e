"""The run report: one self-contained HTML page built from manifest.json and the run's stores.

Sections appear only when their data exists in the run. A section whose data
cannot be read says so in place (the rest of the page is still written).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.report import plots
from pipeline.report.html import esc, img, kv_table, page, pre_json, table

__all__ = ["write_report", "build_page"]

log = logging.getLogger("porelab.report")

IMAGE_KINDS = ("preprocess", "correct", "ingest")
LABEL_KINDS = ("refine", "segment", "baseline")
MAX_PROFILE_VOXELS = 2_000_000_000


class _Run:
    """What the report reads from a run folder."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        mpath = run_dir / "manifest.json"
        if not mpath.is_file():
            from pipeline.errors import UserError

            raise UserError(f"{run_dir}: has no manifest.json; expected a run folder written by 'porelab run'")
        self.manifest: dict[str, Any] = json.loads(mpath.read_text())
        self.stages: list[dict[str, Any]] = [s for s in self.manifest.get("stages", []) if s.get("status") == "done"]

    def of_kind(self, *kinds: str) -> list[dict[str, Any]]:
        return [s for s in self.stages if s.get("kind") in kinds]

    def volume(self, stage: dict[str, Any]) -> Any:
        from pipeline.io.volume import open_volume

        out = stage.get("output")
        if not out or not str(out).endswith(".zarr") or not Path(out).exists():
            return None
        try:
            return open_volume(out)
        except Exception:  # noqa: BLE001 - a store of another layout (a synthetic dataset) is not a volume
            return None

    def json_file(self, stage: dict[str, Any], key: str) -> dict[str, Any] | None:
        f = (stage.get("files") or {}).get(key)
        if f and Path(f).is_file():
            return json.loads(Path(f).read_text())
        return None

    def image_volume(self) -> tuple[str, Any] | None:
        for st in reversed(self.of_kind(*IMAGE_KINDS)):
            v = self.volume(st)
            if v is not None:
                return st["name"], v
        return None

    def label_volumes(self) -> list[tuple[str, Any]]:
        out, seen = [], set()
        for st in self.stages:
            v = self.volume(st)
            if v is not None and (st.get("kind") in LABEL_KINDS or v.name == "labels") and st["output"] not in seen:
                seen.add(st["output"])  # measuring stages pass their input labels on
                out.append((st["name"], v))
        return out


def _sec_overview(run: _Run) -> str:
    m = run.manifest
    rows = [{"stage": s.get("name"), "kind": s.get("kind"), "status": s.get("status"), "seconds": s.get("seconds"),
             "skipped (up to date)": bool(s.get("skipped")), "output": os.path.relpath(s["output"], run.dir) if s.get("output") else None}
            for s in m.get("stages", [])]
    body = kv_table({"run": m.get("name"), "status": m.get("status"), "created": m.get("created"), "updated": m.get("updated"),
                     "seed": m.get("seed"), "backend": m.get("backend")})
    body += "<h3>Stages</h3>" + table(rows)
    first = next((v for v in (run.volume(s) for s in run.stages) if v is not None), None)
    if first is not None:
        vs = first.attrs.get("voxel_size_nm")
        body += "<h3>Input</h3>" + kv_table({
            "store": first.encoding.get("source", first.name), "variable": first.name, "shape (z, y, x)": list(first.shape),
            "dtype": str(first.dtype), "voxel size (nm, z y x)": vs,
            "extent (µm, z y x)": [round(n * v / 1000, 3) for n, v in zip(first.shape, vs)] if vs else None,
            "size (MB)": round(first.nbytes / 1e6, 2), "source": first.attrs.get("source"),
        })
    return body


def _sec_correction(run: _Run) -> str:
    parts = []
    for st in run.of_kind("correct"):
        v = run.volume(st)
        if v is None:
            continue
        a = v.attrs
        if a.get("drift_px"):
            parts.append(img(plots.drift_plot(a["drift_px"], a.get("drift_measured_px")), "drift curve"))
        if a.get("illumination_relative_range"):
            parts.append(img(plots.illumination_plot(a["illumination_relative_range"], a.get("illumination_map")), "illumination"))
        facts = {k: a[k] for k in ("tilt", "roi_box", "drift_reference_px", "drift_pairs_used") if k in a}
        if facts:
            parts.append(kv_table(facts))
    return "".join(parts)


def _slices(vol: Any, idx: list[int]) -> np.ndarray:
    return np.asarray(vol.data[idx].compute() if hasattr(vol.data, "compute") else vol.data[idx])


def _sec_slices(run: _Run) -> str:
    im = run.image_volume()
    labels = run.label_volumes()
    if im is None and not labels:
        return ""
    name, vol = im if im is not None else labels[0]
    nz = vol.shape[0]
    idx = sorted({int(round(f * (nz - 1))) for f in (0.2, 0.5, 0.8)})
    overlays = {n: _slices(lv, idx) for n, lv in labels if lv.shape == vol.shape}
    body = img(plots.slices_plot(_slices(vol, idx), overlays, idx), "example slices")
    return body + f'<p class="note">Grey image from stage <b>{esc(name)}</b>; coloured: pores of each segmentation.</p>'


def _analyze_results(run: _Run) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for st in run.of_kind("analyze"):
        d = run.json_file(st, "metrics")
        if d is not None:
            out.append((st["name"], d))
    return out


def _sec_porosity(run: _Run) -> str:
    profiles: dict[str, list[float]] = {}
    rows = []
    for name, d in _analyze_results(run):
        profiles[name] = d["porosity"]["per_slice"]
        rows.append({"source": name, "porosity": d["porosity"]["porosity"], "block std": d["porosity"]["per_block_std"],
                     "truth": (d.get("truth") or {}).get("porosity_truth")})
    measured = {st.get("output") for st in run.of_kind("analyze")}
    truth_profile = next((d["truth_per_slice"] for _, d in _analyze_results(run) if d.get("truth_per_slice")), None)
    for name, lv in run.label_volumes():
        path = next((st.get("output") for st in run.stages if st["name"] == name), None)
        if path not in measured and lv.size <= MAX_PROFILE_VOXELS:
            p = (lv.data == 1).mean(axis=(1, 2))
            p = np.asarray(p.compute() if hasattr(p, "compute") else p)
            if truth_profile is not None and p.shape == (len(truth_profile),) and np.allclose(p, truth_profile):
                continue  # the truth itself, drawn dashed already
            profiles[name] = p.tolist()
            rows.append({"source": name, "porosity": float(p.mean())})
    if not profiles:
        return ""
    body = img(plots.porosity_profile_plot(profiles, truth=truth_profile), "porosity per slice") + table(rows)
    for name, d in _analyze_results(run):
        pb = d["porosity"].get("per_block")
        if pb and np.asarray(pb).size > 1:
            body += f"<h3>Porosity map ({esc(name)}, blocks of {esc(d['porosity']['block_shape'])} voxels)</h3>"
            body += img(plots.porosity_map_plot(pb), "porosity map")
    return body


def _sec_psd(run: _Run) -> str:
    body = ""
    for name, d in _analyze_results(run):
        psd = d.get("psd") or {}
        if not psd.get("counts"):
            continue
        body += f"<h3>{esc(name)}</h3>" + img(plots.psd_plot(psd["counts"], psd["edges_nm"], psd.get("fit"), psd.get("median_nm")),
                                              "pore-size distribution")
        fit = psd.get("fit") or {}
        if fit.get("poor"):
            body += (f'<p class="warn">The log-normal fit is poor (KS distance {fit["ks"]:.3f}): its median '
                     f'({fit["median_nm"]:.1f} nm) does not describe these pores; the distribution\'s own median is '
                     f'{psd.get("median_nm", float("nan")):.1f} nm.</p>')
        facts = {f"distribution {k.removesuffix('_nm')} (nm)": psd[k] for k in ("median_nm", "mean_nm", "p10_nm", "p90_nm") if k in psd}
        facts.update({f"log-normal fit: {k}": v for k, v in fit.items()})
        facts.update({"largest pore diameter (nm)": 2 * psd.get("r_max_nm", float("nan")), "halo (voxels z y x)": psd.get("halo_voxels"),
                      "radii swept": psd.get("n_radii")})
        surf = d.get("surface") or {}
        facts.update({f"surface: {k}": v for k, v in surf.items()})
        if d.get("connectivity"):
            facts.update({f"connected pore fraction {k}": v for k, v in d["connectivity"]["connected_fraction"].items()})
            if d["connectivity"].get("roi"):
                facts["connectivity measured on (z, y, x voxels)"] = str(d["connectivity"]["roi"])
        body += kv_table(facts)
        tr = d.get("transport") or {}
        rows = [{"phase": ph, "axis": ax, "tortuosity factor": r["tau"], "D_eff / D0": r["effective_diffusivity"],
                 "MacMullin": r["macmullin"], "volume fraction": r["volume_fraction"], "percolating": r["percolating_fraction"],
                 "converged": r["converged"]} for ph in ("pore", "solid") for ax, r in (tr.get(ph) or {}).items()]
        if rows:
            body += "<h3>Transport (steady diffusion)</h3>" + table(rows)
        if tr.get("geometric"):
            body += kv_table({f"geometric tortuosity {k}": v for k, v in tr["geometric"].items()})
        whole = [[0, int(n)] for n in d.get("shape", [])]
        if tr.get("roi") and tr["roi"] != whole:
            body += (f'<p class="note">Transport measured on the sub-volume {esc(tr["roi"])} (voxels z, y, x) of '
                     f'{esc(d.get("shape"))}: the diffusion solve holds its volume in memory.</p>')
        if d.get("skipped"):
            body += "".join(f'<p class="warn">{esc(k)} skipped: {esc(v)}</p>' for k, v in d["skipped"].items())
    return body


_MESH_COLS = ["method", "faces", "area_nm2", "volume_nm3", "porosity", "true_porosity", "porosity_abs_error", "chamfer_nm",
              "hausdorff_nm", "hausdorff95_nm", "volume_ratio", "area_ratio", "watertight", "seconds"]


def _sec_meshes(run: _Run) -> str:
    body = ""
    for st in run.of_kind("reconstruct"):
        methods = (st.get("metrics") or {}).get("methods") or {}
        if not methods:
            continue
        rows = [{"method": m, **r} for m, r in methods.items()]
        keys = [("porosity", "porosity from enclosed volume")]
        if any(r.get("chamfer_nm") is not None for r in rows):
            keys = [("chamfer_nm", "Chamfer distance (nm)"), ("porosity_abs_error", "porosity abs. error")]
        keys.append(("seconds", "meshing time (s)"))
        body += f"<h3>{esc(st['name'])}</h3>" + img(plots.method_bars(rows, keys), "mesh method comparison")
        roi = (st.get("metrics") or {}).get("roi")
        if roi:
            whole = (st.get("metrics") or {}).get("volume_shape") or []
            body += (f'<p class="note">Meshed on the centred sub-volume {esc(str(roi))} (z, y, x voxels) of '
                     f'{esc(str(whole))}: a whole mesh is held in memory (the stage\'s max_voxels / roi).</p>')
        body += table(rows, [c for c in _MESH_COLS if any(c in r for r in rows)])
        files = [f for k, f in (st.get("files") or {}).items() if k in methods]
        if files:
            body += '<p class="note">Meshes (nm): ' + ", ".join(esc(os.path.relpath(f, run.dir)) for f in files) + "</p>"
    return body


def _sec_baseline(run: _Run) -> str:
    body = ""
    others: dict[str, list[float]] = {}
    por = [d["porosity"]["porosity"] for _, d in _analyze_results(run)]
    if len(por) > 1:
        others["porelab (analyses)"] = por
    for st in run.of_kind("baseline"):
        d = run.json_file(st, "sweep") or {}
        sw = d.get("sweep")
        body += f"<h3>{esc(st['name'])}</h3>"
        body += kv_table({"porosity": d.get("porosity"), **{f"threshold.{k}": v for k, v in (d.get("threshold") or {}).items()},
                          **{f"params.{k}": v for k, v in (d.get("params") or {}).items()}})
        if sw:
            body += img(plots.sensitivity_plot(sw, others, truth=(d.get("truth") or {}).get("porosity_truth")), "baseline sensitivity")
            body += (f'<p class="note">Over {len(sw["runs"])} parameter settings on {sw["slices"]} slices the baseline\'s porosity '
                     f'ranges from {sw["min"]:.3f} to {sw["max"]:.3f}: a spread of {100 * sw["spread"]:.1f} porosity points '
                     f'(the paper reports up to 10 %).</p>')
            body += (f"<details><summary>All {len(sw['runs'])} settings (— = default)</summary>"
                     + table([{**r["params"], "porosity": r["porosity"], "threshold": r["threshold"]} for r in sw["runs"]])
                     + "</details>")
            if not others:
                body += ('<p class="note">porelab\'s own spread appears beside it when the run holds several analyses '
                         "(other settings or seeds).</p>")
        if d.get("truth"):
            body += "<h3>Against the truth</h3>" + kv_table(d["truth"])
    return body


TRAIN_KINDS = ("train2d", "train3d")
_TRAIN_FIGURES = (("curves", "Loss and validation metrics per epoch (as the paper's Fig. 7)"),
                  ("epochs", "One validation slice across epochs (Fig. 8)"),
                  ("prediction", "Prediction against the truth, chosen epoch (Fig. 9)"))


def _sec_training(run: _Run) -> str:
    body = ""
    for st in run.of_kind(*TRAIN_KINDS):
        out = st.get("output")
        card_file = Path(out) / "model.json" if out else None
        if card_file is None or not card_file.is_file():
            continue
        card = json.loads(card_file.read_text())
        a, t = card.get("architecture", {}), card.get("training", {})
        body += f"<h3>{esc(st['name'])}: {esc(card.get('name'))} ({esc(card.get('task'))} model)</h3>"
        body += kv_table({
            "network": f"{a.get('dims')}D U-Net, depth {a.get('depth')}, {a.get('features')} base channels, {a.get('norm')} norm",
            "input": f"{card.get('input', {}).get('kind')}, channels {', '.join(card.get('input', {}).get('channels', []))}",
            "parameters": card.get("parameters"), "epochs": t.get("epochs"), "chosen epoch": t.get("chosen_epoch"),
            "training time (s)": t.get("seconds"), "samples / s": t.get("samples_per_second"),
            "workers": f"{t.get('workers')} ({t.get('executor')})", "hardware": t.get("hardware"),
            "loss": (t.get("loss") or {}).get("name"), "samples per split": t.get("samples"),
            "model folder": os.path.relpath(out, run.dir),
        })
        val = (card.get("metrics") or {}).get("val")
        if val:
            body += "<h4>Validation (chosen epoch)</h4>" + kv_table(val)
        files = st.get("files") or {}
        for key, caption in _TRAIN_FIGURES:
            f = files.get(key)
            if f and Path(f).is_file():
                body += f'<p class="note">{esc(caption)}</p>' + img(Path(f).read_bytes(), f"{st['name']} {key}")
    return body


def _sec_segmentation(run: _Run) -> str:
    from pipeline.io.stores import probability_of
    from pipeline.io.volume import open_volume

    body = ""
    for st in run.of_kind("segment", "refine"):
        out = st.get("output")
        try:
            prob = probability_of(out) if out else None
        except Exception:  # noqa: BLE001 - a segmentation of a dataset has samples; it is not drawn here
            continue
        if prob is None:
            continue
        z = prob.shape[0] // 2
        panels = {"pore probability": np.asarray(prob.data[z].compute(), dtype=np.float32)}
        for where in (Path(out), Path(str(prob.attrs.get("probability_store") or out))):
            if (where / "uncertainty").is_dir():
                panels["uncertainty (spread over flips)"] = np.asarray(open_volume(where, "uncertainty").data[z].compute(), np.float32)
                break
        image = prob.attrs.get("image_store")
        grey = None
        if image and Path(image).exists():
            try:
                grey = np.asarray(open_volume(image).data[z].compute(), dtype=np.float32)
            except Exception:  # noqa: BLE001
                grey = None
        model = prob.attrs.get("model", {})
        body += f"<h3>{esc(st['name'])} (model {esc(model.get('name'))}, slice {z})</h3>"
        body += img(plots.probability_plot(grey, panels), f"{st['name']} probability")
    return body


def _sec_evaluation(run: _Run) -> str:
    body = ""
    for st in run.of_kind("evaluate"):
        d = run.json_file(st, "evaluation")
        if not d:
            continue
        rows = []
        for name, m in d["methods"].items():
            for fam, g in [("all", m["overall"]), *m["families"].items()]:
                rows.append({"method": name, "family": fam, "samples": g["samples"], "pixel accuracy %": 100 * g["accuracy"],
                             "IoU pore %": 100 * g["iou_pore"], "IoU solid %": 100 * g["iou_solid"],
                             "mean |porosity error|": g["porosity_abs_error"], "max |porosity error|": g["porosity_abs_error_max"],
                             "CE": g.get("ce")})
        body += (f"<h3>{esc(st['name'])}: {d['samples']} samples of the {esc(d['split'])} split</h3>" + table(rows)
                 + '<p class="note">Accuracy and IoU pool the voxels of a group; the porosity error is per sample. '
                   "The paper's 2D U-Net: 93.14 % pixel accuracy, 90.49 % pore IoU, porosity MAE 0.064.</p>")
    return body


def _sec_truth(run: _Run) -> str:
    rows = [{"source": n, **d["truth"]} for n, d in _analyze_results(run) if d.get("truth")]
    return table(rows) if rows else ""


def _sec_metrics(run: _Run) -> str:
    body = ""
    for st in run.stages:
        m = st.get("metrics") or {}
        if m:
            body += f"<h3>{esc(st['name'])} ({esc(st.get('kind'))})</h3>" + kv_table(m)
    return body


def _sec_figures(run: _Run) -> str:
    body = ""
    for st in run.stages:
        if st.get("kind") in TRAIN_KINDS:
            continue  # drawn in the training section
        for key, f in (st.get("files") or {}).items():
            if str(f).lower().endswith(".png") and Path(f).is_file():
                body += f"<h3>{esc(st['name'])}: {esc(key)}</h3>" + img(Path(f).read_bytes(), f"{st['name']} {key}")
    return body


def _sec_provenance(run: _Run) -> str:
    m = run.manifest
    body = kv_table({"spec hash": m.get("spec_hash"), "git commit": m.get("git_commit"), "job file": m.get("job_file"),
                     "seed": m.get("seed"), **{f"machine.{k}": v for k, v in (m.get("machine") or {}).items()}})
    body += "<h3>Package versions</h3>" + kv_table(m.get("versions") or {})
    body += "<h3>Stage hashes and seeds</h3>" + table(
        [{"stage": s.get("name"), "hash": s.get("hash"), "seed": s.get("seed"), "input": s.get("input"),
          "started": s.get("started"), "finished": s.get("finished")} for s in m.get("stages", [])])
    body += "<h3>Job spec</h3>" + pre_json(m.get("spec"))
    return body


SECTIONS: list[tuple[str, str, Callable[[_Run], str]]] = [
    ("overview", "Run and input", _sec_overview),
    ("correction", "Correction diagnostics", _sec_correction),
    ("training", "Training", _sec_training),
    ("slices", "Example slices", _sec_slices),
    ("segmentation", "Learned segmentation", _sec_segmentation),
    ("porosity", "Porosity", _sec_porosity),
    ("psd", "Pore sizes and structure", _sec_psd),
    ("truth", "Against the ground truth", _sec_truth),
    ("evaluation", "Evaluation on held-out stacks", _sec_evaluation),
    ("meshes", "Meshes: method comparison", _sec_meshes),
    ("baseline", "Threshold baseline and its sensitivity", _sec_baseline),
    ("figures", "Stage figures", _sec_figures),
    ("metrics", "All metrics", _sec_metrics),
    ("provenance", "Provenance", _sec_provenance),
]


def build_page(run_dir: Path) -> str:
    """The report's HTML for a run folder."""
    run = _Run(Path(run_dir))
    sections = []
    for anchor, title, fn in SECTIONS:
        try:
            body = fn(run)
        except Exception as exc:  # noqa: BLE001 - one unreadable part must not cost the whole report
            log.warning("report section %s failed: %s", anchor, exc)
            body = f'<p class="warn">This section could not be drawn: {esc(type(exc).__name__)}: {esc(exc)}</p>'
        if body:
            sections.append((anchor, title, body))
    m = run.manifest
    sub = f"status {m.get('status')} · {len(run.stages)} stages done · seed {m.get('seed')} · {m.get('updated') or m.get('created') or ''}"
    return page(f"porelab report: {m.get('name', run.dir.name)}", sub, sections)


def write_report(run_dir: Path) -> Path:
    """Write ``run_dir/report/index.html`` (atomically) and return its path.

    Parameters
    ----------
    run_dir : Path
        A run folder with ``manifest.json`` (written by ``porelab run``).
    """
    run_dir = Path(run_dir)
    text = build_page(run_dir)
    out = run_dir / "report" / "index.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".index.html.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    return out


