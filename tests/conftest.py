"""Test-wide settings: quiet progress bars, caches in the repo, no cluster left behind."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("PORELAB_PROGRESS", "0")
os.environ.setdefault("MPLCONFIGDIR", str(REPO / ".cache" / "matplotlib"))
os.environ.setdefault("XDG_CACHE_HOME", str(REPO / ".cache" / "xdg"))
os.environ.setdefault("PORELAB_CACHE", str(REPO / ".cache"))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

_CLUSTER_WORDS = ("dask", "distributed", "ray", "raylet", "gcs_server", "plasma")


def _cluster_children() -> list[str]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if any(word in cmd for word in _CLUSTER_WORDS):
            found.append(f"{child.pid}: {cmd[:120]}")
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a Dask or Ray process started by the tests is still alive."""
    import time

    deadline = time.monotonic() + 15
    left = _cluster_children()
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = _cluster_children()
    if left:
        print("\nDask or Ray processes left behind by the tests:\n  " + "\n  ".join(left))
        session.exitstatus = 1
    _EXIT_STATUS.append(int(session.exitstatus))


# -- small synthetic data and models shared by the model, training and segmentation tests --------


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight rendered samples of 32 x 96 x 96 voxels (two families), splits 6 / 1 / 1, built in this process."""
    from pipeline.synth.factory import build_dataset, plan_samples
    from pipeline.synth.params import DEFAULT_RENDER_RANGES

    out = tmp_path_factory.mktemp("data") / "tiny.zarr"
    plans = plan_samples(8, seed=1, shape=(32, 96, 96), voxel_size_nm=(10.0, 10.0, 10.0),
                         families={"solid_spheres": 1.0, "blobs": 1.0},
                         structure_ranges={"porosity": (0.35, 0.65), "median_nm": (60.0, 140.0)},
                         render={"backend": "builtin"}, render_ranges=DEFAULT_RENDER_RANGES)
    build_dataset(out, plans, seed=1, executor="local", splits={"train": 0.6, "val": 0.2, "test": 0.2}, figures=False)
    return out


def make_model_folder(folder: Path, *, kind: str = "slices", k: int = 1, seed: int = 0, features: int = 4,
                      depth: int = 2, tile: tuple[int, ...] | None = None) -> Path:
    """A model folder with randomly initialised weights (for tests of inference, loading and chunking)."""
    import torch

    from pipeline.models.card import Architecture, InferenceSpec, InputSpec, ModelCard
    from pipeline.models.folder import save_model
    from pipeline.models.nets import build_network

    torch.manual_seed(seed)
    if kind == "slices":
        arch = Architecture(dims=2, in_channels=k, features=features, depth=depth)
        inp = InputSpec(kind="slices", slices=k, channels=["image"] if k == 1 else [f"slice z{j:+d}" for j in range(-(k // 2), k // 2 + 1)],
                        patch_size=[32, 32], divisor=2**depth, voxel_size_nm={"min": [10, 10, 10], "max": [10, 10, 10]})
        inf = InferenceSpec(tile=list(tile or (32, 32)), overlap=0.25, tta_axes=[0, 1])
        task = "segment"
    else:
        arch = Architecture(dims=3, in_channels=2, features=features, depth=depth)
        inp = InputSpec(kind="volume", channels=["probability", "image"], patch_size=[16, 16, 16], divisor=2**depth)
        inf = InferenceSpec(tile=list(tile or (16, 16, 16)), overlap=0.25, tta_axes=[1, 2])
        task = "refine"
    net = build_network({"name": "unet", **arch.kwargs()})
    # non-trivial batch-norm statistics, so that eval-mode outputs vary with the input
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    card = ModelCard(name=f"random-{kind}-{k}", task=task, architecture=arch, input=inp, inference=inf)
    return save_model(folder, net.eval(), card)


@pytest.fixture(scope="session")
def model_factory(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - a factory
    """``model_factory(kind, k=..., ...)`` -> a cached random model folder."""
    root = tmp_path_factory.mktemp("models")
    made: dict[tuple, Path] = {}

    def make(kind: str = "slices", **kw: object) -> Path:
        key = (kind, tuple(sorted(kw.items())))
        if key not in made:
            made[key] = make_model_folder(root / f"m{len(made)}", kind=kind, **kw)  # type: ignore[arg-type]
        return made[key]

    return make


# -- a clean exit ------------------------------------------------------------------------------------

_EXIT_STATUS: list[int] = []


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave the interpreter without its finalisers once pytest has reported everything.

    After a whole suite (torch, ONNX Runtime, numba, Ray and Dask clients, all in one process)
    the interpreter's own finalisation crashed once with SIGSEGV after every test had passed
    and the summary was printed (exit code 139 instead of 0); smaller selections exit cleanly.
    No test is affected by this: results, summaries and the exit status are all final here.
    """
    import sys

    if not _EXIT_STATUS:  # no session ran (usage error, --help): the normal exit and its status
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS[-1])
