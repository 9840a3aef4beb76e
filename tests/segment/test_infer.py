"""Inference over dask blocks equals inference of the whole volume, whatever the chunking."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from pipeline.errors import UserError
from pipeline.models.folder import read_card
from pipeline.segment.infer import (
    DEFAULT_BLOCK_BYTES,
    MIN_BLOCK_BYTES,
    TORCH_WORKER_BASE_BYTES,
    WORKER_BASE_BYTES,
    block_budget,
    block_chunks,
    plan_tiles,
    predict_dask,
    predict_volume,
)


def _volume(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


@pytest.mark.parametrize("k,chunks", [(1, (5, 17, 23)), (3, (3, 110, 130)), (5, (13, 11, 9)), (3, (4, 37, 29))])
def test_slice_model_chunked_equals_one_block(model_factory, k: int, chunks: tuple[int, int, int]) -> None:  # noqa: ANN001
    folder = model_factory("slices", k=k)
    card = read_card(folder)
    vol = _volume((9, 110, 130), seed=k)
    whole = predict_volume(vol, folder, card)
    for budget in (10**9, 100_000):  # whole planes, then (y, x) blocks as well
        out = predict_dask(da.from_array(vol, chunks=chunks), folder, card, budget_bytes=budget)
        if budget < 10**6:
            assert len(out.chunks[2]) > 1 or len(out.chunks[3]) > 1
        np.testing.assert_allclose(out.compute(scheduler="threads"), whole, atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunks", [(7, 17, 23), (37, 41, 45), (10, 13, 30)])
def test_volume_model_chunked_equals_one_block(model_factory, chunks: tuple[int, int, int]) -> None:  # noqa: ANN001
    folder = model_factory("volume")
    card = read_card(folder)
    vol = _volume((2, 37, 41, 45), seed=5)
    whole = predict_volume(vol, folder, card)
    for budget in (10**9, 60_000):
        data = da.from_array(vol, chunks=(2, *chunks))
        out = predict_dask(data, folder, card, budget_bytes=budget)
        if budget < 10**6:
            assert max(len(c) for c in out.chunks[1:]) > 1  # really split into blocks
        np.testing.assert_allclose(out.compute(scheduler="threads"), whole, atol=1e-5, rtol=0)


def test_first_and_last_slices_of_a_2_5d_model_read_mirrored_neighbours(model_factory) -> None:  # noqa: ANN001
    folder = model_factory("slices", k=3)
    card = read_card(folder)
    vol = _volume((6, 32, 32), seed=2)
    out = predict_volume(vol, folder, card)
    mirrored = vol[[1, 0, 1, 2, 3, 4, 5, 4]]  # slices -1 and 6 are slices 1 and 4
    ref = predict_volume(mirrored, folder, card)[:, 1:7]
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_tta_gives_the_mean_and_the_spread_of_the_flips(model_factory) -> None:  # noqa: ANN001
    folder = model_factory("slices", k=1)
    card = read_card(folder)
    vol = _volume((4, 40, 40), seed=3)
    plain = predict_volume(vol, folder, card)
    tta = predict_volume(vol, folder, card, tta=True)
    assert plain.shape == (1, 4, 40, 40) and tta.shape == (2, 4, 40, 40)
    assert (tta[1] >= 0).all() and tta[1].max() > 0
    assert np.all((tta[0] >= 0) & (tta[0] <= 1))
    flipped = predict_volume(vol[:, ::-1, ::-1].copy(), folder, card)[:, :, ::-1, ::-1]
    assert np.abs(tta[0] - 0.25 * (plain + flipped + predict_volume(vol[:, ::-1].copy(), folder, card)[:, :, ::-1]
                                   + predict_volume(vol[:, :, ::-1].copy(), folder, card)[:, :, :, ::-1])).max() < 1e-5


def test_blocks_are_whole_planes_when_they_fit_and_grid_multiples_otherwise(model_factory) -> None:  # noqa: ANN001
    card = read_card(model_factory("slices", k=3, tile=(64, 64)))
    plan = plan_tiles(card, (100, 500, 700))
    assert plan.tile == (1, 64, 64) and plan.step == (1, 48, 48) and plan.halo == (1, 64, 64)
    z, y, x = block_chunks((100, 500, 700), plan, budget_bytes=10**9, z_multiple=32)
    assert y == (500,) and x == (700,) and all(c % 32 == 0 for c in z[:-1])
    z, y, x = block_chunks((100, 500, 700), plan, budget_bytes=4 * 10**6, z_multiple=32)
    assert len(y) > 1 and all(c % 48 == 0 for c in y[:-1]) and min(y + x) >= 64


def test_planes_that_fit_only_a_part_of_a_store_chunk_take_a_divisor_of_it(model_factory) -> None:  # noqa: ANN001
    """Whole 2D planes, but 32 of them (the store's chunk) are over the budget: blocks of 8, and a store that nests them."""
    from pipeline.engine.blocks import nesting_chunks, nests
    from pipeline.segment.infer import _block_bytes

    card = read_card(model_factory("slices", k=1, tile=(64, 64)))
    shape = (100, 300, 400)
    plan = plan_tiles(card, shape)
    budget = _block_bytes(plan, (10, 300, 400), (0, 0, 0), 1)  # 10 planes fit, 16 do not
    z, y, x = block_chunks(shape, plan, budget_bytes=budget, z_multiple=32)
    assert y == (300,) and x == (400,)
    assert z[:-1] == (8,) * (len(z) - 1) and sum(z) == 100
    assert _block_bytes(plan, (max(z), 300, 400), (0, 0, 0), 1) <= budget
    store = nesting_chunks((z, y, x), (32, 256, 256))
    assert store == (8, 256, 256) and nests((z, y, x), store)


def test_short_axes_get_one_tile_rounded_to_the_divisor(model_factory) -> None:  # noqa: ANN001
    card = read_card(model_factory("slices", k=1, tile=(64, 64)))
    assert plan_tiles(card, (3, 20, 150)).tile == (1, 20, 64)  # divisor 4: 20 stays 20
    vol = _volume((3, 20, 150))
    out = predict_volume(vol, model_factory("slices", k=1, tile=(64, 64)), card)
    assert out.shape == (1, 3, 20, 150) and np.isfinite(out).all()


def test_a_distributed_worker_loads_the_model_once(model_factory, tmp_path) -> None:  # noqa: ANN001
    from pipeline.engine.dask_cluster import dask_client
    from pipeline.segment.predictor import model_loads

    folder = model_factory("slices", k=1)
    card = read_card(folder)
    vol = _volume((12, 40, 40), seed=4)
    with dask_client(n_workers=1, threads_per_worker=1, memory_limit="1GiB", local_directory=tmp_path / "dask") as client:
        out = predict_dask(da.from_array(vol, chunks=(3, 40, 40)), folder, card, budget_bytes=100_000)
        assert out.numblocks[1] >= 4
        res = out.compute()
        loads = list(client.run(model_loads).values())
    assert loads == [1]
    np.testing.assert_allclose(res, predict_volume(vol, folder, card), atol=1e-5)


@pytest.mark.parametrize("kind,shape", [("slices", (5, 40, 48)), ("volume", (2, 20, 24, 28))])
def test_onnx_runtime_equals_torch(model_factory, kind: str, shape: tuple[int, ...]) -> None:  # noqa: ANN001
    from pipeline.models.folder import load_model
    from pipeline.models.onnx import onnx_path

    folder = model_factory(kind, **({"k": 3} if kind == "slices" else {}))
    card = read_card(folder)
    vol = _volume(shape, seed=7)
    torch_out = predict_volume(vol, folder, card, runtime="torch")
    np.testing.assert_allclose(predict_volume(vol, folder, card, runtime="onnx"), torch_out, atol=1e-4, rtol=0)
    np.testing.assert_allclose(predict_volume(vol, folder, card, runtime="onnx", tta=True),
                               predict_volume(vol, folder, card, runtime="torch", tta=True), atol=1e-4, rtol=0)
    path = onnx_path(load_model(folder))
    assert path.is_file() and card.weights_sha256[:16] in path.name  # exported once, named by the weights


def test_auto_runtime_is_bf16_torch_on_amx_cpus_else_onnx(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.segment import predictor

    monkeypatch.setattr(predictor, "cpu_has_amx", lambda: False)
    assert predictor.resolve_runtime("auto", "cpu") == "onnx"
    monkeypatch.setattr(predictor, "cpu_has_amx", lambda: True)
    assert predictor.resolve_runtime("auto", "cpu") == "torch-bf16"
    monkeypatch.setattr(predictor, "_cuda_bf16", lambda: False)
    assert predictor.resolve_runtime("auto", "cuda") == "torch"
    monkeypatch.setattr(predictor, "_cuda_bf16", lambda: True)
    assert predictor.resolve_runtime("auto", "cuda") == "torch-bf16"
    assert predictor.resolve_runtime("torch", "cpu") == "torch"
    with pytest.raises(UserError, match="runtime is 'tf'"):
        predictor.resolve_runtime("tf", "cpu")


@pytest.mark.parametrize("kind,shape", [("slices", (4, 48, 48)), ("volume", (2, 16, 32, 32))])
def test_bf16_runtime_stays_close_to_fp32(model_factory, kind: str, shape: tuple[int, ...]) -> None:  # noqa: ANN001
    folder = model_factory(kind, **({"k": 3} if kind == "slices" else {}))
    card = read_card(folder)
    vol = _volume(shape, seed=11)
    fp32 = predict_volume(vol, folder, card, runtime="torch")
    bf16 = predict_volume(vol, folder, card, runtime="torch-bf16")
    assert bf16.dtype == np.float32 and bf16.shape == fp32.shape
    assert 0 < np.abs(bf16 - fp32).max() < 0.05  # bf16 really ran (not fp32), and stays close


def test_onnx_workers_do_not_import_torch(model_factory) -> None:  # noqa: ANN001
    import subprocess
    import sys

    from pipeline.models.onnx import ensure_onnx

    folder = model_factory("slices", k=3)
    ensure_onnx(folder, read_card(folder))
    code = ("import sys, numpy as np\n"
            "from pipeline.models.folder import read_card\n"
            "from pipeline.segment.infer import predict_volume\n"
            f"f = {str(folder)!r}\n"
            "out = predict_volume(np.zeros((3, 32, 32), np.float32), f, read_card(f), runtime='onnx')\n"
            "assert out.shape == (1, 3, 32, 32)\n"
            "print('torch' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


def test_block_budget_leaves_the_worker_its_base_memory() -> None:
    assert block_budget(None) == DEFAULT_BLOCK_BYTES
    assert block_budget(64 * 2**30) == DEFAULT_BLOCK_BYTES  # capped
    assert block_budget(WORKER_BASE_BYTES) == MIN_BLOCK_BYTES  # nothing left: the smallest block
    mem = 1024 * 2**20
    assert block_budget(mem) == (mem - WORKER_BASE_BYTES) // 6
    # three times the estimate (what a block really costs) plus the base stays under the limit
    assert WORKER_BASE_BYTES + 3 * block_budget(mem) < mem
    # torch takes more of the worker than ONNX Runtime
    assert block_budget(mem, "torch-bf16") == (mem - TORCH_WORKER_BASE_BYTES) // 6 < block_budget(mem, "onnx")
    assert block_budget(TORCH_WORKER_BASE_BYTES, "torch") == MIN_BLOCK_BYTES


def test_small_workers_keep_onnx_runtime_on_amx_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.segment import predictor

    monkeypatch.setattr(predictor, "cpu_has_amx", lambda: True)
    assert predictor.resolve_runtime("auto", "cpu", memory_limit=768 * 2**20) == "onnx"  # torch would fill most of it
    assert predictor.resolve_runtime("auto", "cpu", memory_limit=2 * 2**30) == "torch-bf16"
    assert predictor.resolve_runtime("torch-bf16", "cpu", memory_limit=768 * 2**20) == "torch-bf16"  # asked for: kept
