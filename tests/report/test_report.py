"""The run report: a full small run, its sections, and the page as headless Chromium shows it."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.cli.main import main
from pipeline.io.volume import as_volume, write_volume
from pipeline.report import write_report

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.jobs.runner import run_job
    from pipeline.synth.render_builtin import render_builtin
    from pipeline.synth.structures import random_spheres

    d = tmp_path_factory.mktemp("report")
    vs = (10.0, 10.0, 10.0)
    s = random_spheres((16, 48, 48), porosity=0.45, median_nm=60.0, voxel_size_nm=vs, seed=2)
    r = render_builtin(s.labels, vs, seed=2)
    write_volume(as_volume(r.image, vs), d / "image.zarr")
    write_volume(as_volume(r.labels, vs, name="labels"), d / "truth.zarr")
    job = {
        "name": "rep",
        "seed": 5,
        "engine": {"dask": {"n_workers": 1, "memory_limit": "2GiB"}, "chunks": [8, 48, 48]},
        "stages": [
            {"stage": "ingest", "path": "image.zarr"},
            {"stage": "correct", "tilt": {"enabled": False}, "roi": {"mode": "none"}},
            {"stage": "baseline", "truth": "truth.zarr", "sweep_slices": 4},
            {"stage": "analyze", "truth": "truth.zarr"},
            {"stage": "reconstruct", "truth": "truth.zarr", "methods": ["mc_basic", "voxel_direct", "convex_hull"],
             "n_points": 1500},
            {"stage": "report"},
        ],
    }
    (d / "job.yaml").write_text(yaml.safe_dump(job))
    result = run_job(d / "job.yaml", runs_dir=d / "runs")
    assert result.report is not None and result.report.is_file()
    return result.run_dir


def _pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_report_has_every_section_with_data(run_dir: Path) -> None:
    html = (run_dir / "report" / "index.html").read_text()
    for anchor in ("overview", "correction", "slices", "porosity", "psd", "truth", "meshes", "baseline", "metrics", "provenance"):
        assert f'id="{anchor}"' in html, anchor
    assert "could not be drawn" not in html
    # self-contained: every image embedded, nothing fetched
    assert len(re.findall(r"<img ", html)) == len(_pngs(html)) >= 7  # drift, illumination, slices, porosity, PSD, meshes, sensitivity
    assert not re.search(r'(src|href)="(https?:|//|file:)', html)
    from PIL import Image

    for data in _pngs(html):
        im = Image.open(io.BytesIO(data))
        assert im.format == "PNG" and min(im.size) > 50
    manifest = json.loads((run_dir / "manifest.json").read_text())
    recon = next(s for s in manifest["stages"] if s["kind"] == "reconstruct")
    assert set(recon["metrics"]["methods"]) == {"mc_basic", "voxel_direct", "convex_hull"}
    assert recon["metrics"]["methods"]["voxel_direct"]["chamfer_nm"] >= 0
    for m in ("mc_basic", "voxel_direct", "convex_hull"):
        assert Path(recon["files"][m]).is_file()
    analyze = next(s for s in manifest["stages"] if s["kind"] == "analyze")
    assert 0 < analyze["metrics"]["porosity"] < 1 and "truth" in analyze["metrics"]
    assert manifest["report"].endswith("report/index.html")


def test_sections_appear_only_with_their_data(tmp_path: Path) -> None:
    vs = (5.0, 5.0, 5.0)
    out = write_volume(as_volume(np.zeros((4, 8, 8), np.uint16), vs), tmp_path / "ingest.zarr")
    manifest = {"name": "bare", "status": "done", "seed": 0, "stages": [
        {"name": "ingest", "kind": "ingest", "status": "done", "output": str(out), "metrics": {"shape": [4, 8, 8]}, "files": {}}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    html = write_report(tmp_path).read_text()
    for anchor in ("overview", "slices", "metrics", "provenance"):
        assert f'id="{anchor}"' in html
    for anchor in ("correction", "psd", "meshes", "baseline", "truth"):
        assert f'id="{anchor}"' not in html


def test_report_cli(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(run_dir)]) == 0
    assert "index.html" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert main(["report", str(tmp_path)]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe:
        return exe
    if shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, capture_output=True, timeout=600)
        exe = shutil.which("chromium")
        if exe:
            return exe
    pytest.skip("headless Chromium is not installed and could not be installed (apt-get install chromium)")


def test_page_renders_in_headless_chromium(run_dir: Path, tmp_path: Path) -> None:
    exe = _chromium()
    html = (run_dir / "report" / "index.html").read_text()
    probe = html.replace(
        "</body>",
        "<script>window.addEventListener('load',()=>{const im=[...document.images];"
        "document.body.setAttribute('data-images',im.length);"
        "document.body.setAttribute('data-loaded',im.filter(i=>i.complete&&i.naturalWidth>0).length);});</script></body>",
    )
    page = tmp_path / "probe.html"
    page.write_text(probe)
    flags = CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([exe, *flags, "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    n = re.search(r'data-images="(\d+)"', dom.stdout)
    loaded = re.search(r'data-loaded="(\d+)"', dom.stdout)
    assert n and loaded, dom.stdout[:500]
    assert int(n.group(1)) >= 7 and loaded.group(1) == n.group(1)

    shot = tmp_path / "shot.png"
    res = subprocess.run([exe, *flags, "--window-size=1280,2400", f"--screenshot={shot}",
                          (run_dir / "report" / "index.html").as_uri()], capture_output=True, text=True, timeout=180)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    from PIL import Image

    px = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert px.shape[0] >= 2000 and px.shape[1] >= 1200
    assert px.std() > 20  # not blank
    assert len(np.unique(px.reshape(-1, 3)[::7], axis=0)) > 200  # plots and text, not a flat page
    top = px[:60].mean(axis=(0, 1))
    assert top[2] > top[0] + 20  # the blue header was drawn
