"""The training loop of one worker: the same function under Ray Train and in a single process.

Per epoch: the worker's share of patches (:class:`pipeline.train.data.PatchSampler`),
augmented, one AdamW step per batch with a warm-up + cosine learning rate;
then validation on the ``val`` split with the inference tiling itself
(CE, pixel accuracy, IoU of each phase, Dice, porosity error; 3D IoU and
slice-to-slice smoothness for 3D models), counts summed over workers. Rank 0
writes a checkpoint every epoch (safetensors + JSON), the history (CSV and
JSON) and one validation slice's prediction, and at the end the model folder
(the best epoch by validation mean IoU, or the last) and the figures.

A run resumes from the checkpoint Ray hands back after a worker failure, or
else from the newest checkpoint of the same stage hash in the run folder (a
``porelab run`` that was killed). Each epoch's batches are a function of
(seed, epoch, rank, world), so a resumed run replays what the first would have done.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.models.card import ModelCard
from pipeline.models.folder import LoadedModel, save_model
from pipeline.train.checkpoint import latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from pipeline.train.data import DatasetView, PatchSampler, open_training_data, prepare_image
from pipeline.analyze.confusion import counts, summarize

__all__ = ["train_worker", "learning_rate", "validate", "history_paths"]


def bf16_supported(device: str) -> bool:
    """Whether bf16 autocast runs natively here (AVX-512 BF16 / AMX on CPUs, bf16 on CUDA)."""
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: str) -> str:
    """``fp32`` or ``bf16`` for a settings value (``auto``: bf16 where it is native)."""
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return precision


def learning_rate(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up from 10 % of ``peak`` over ``warmup`` steps, then cosine decay to 1 % of it."""
    if warmup > 0 and step < warmup:
        return peak * (0.1 + 0.9 * step / warmup)
    rest = max(1, total - warmup)
    t = min(1.0, (step - warmup) / rest)
    return peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))


def history_paths(root: Path) -> dict[str, Path]:
    """Where a training stage writes its history and figures."""
    return {"json": root / "history.json", "csv": root / "history.csv", "figures": root / "figures",
            "epochs": root / "figures" / "epochs", "checkpoints": root / "checkpoints", "model": root / "model"}


def _write_history(root: Path, history: list[dict[str, Any]]) -> None:
    paths = history_paths(root)
    tmp = paths["json"].with_name(".history.json.tmp")
    tmp.write_text(json.dumps(history, indent=1, default=float))
    os.replace(tmp, paths["json"])
    keys = list(dict.fromkeys(k for row in history for k in row))
    tmp = paths["csv"].with_name(".history.csv.tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
    os.replace(tmp, paths["csv"])


def _val_ids(view: DatasetView, split: str, limit: int | None) -> list[int]:
    ids = view.samples(split)
    return ids[:limit] if limit else ids


def validate(net: Any, card: ModelCard, view: DatasetView, *, split: str, limit: int | None, val_slices: int,
             rank: int, world: int, device: str, keep_first: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """Count vector of this worker's share of the validation samples, predicted with the inference tiling.

    Slice models: ``val_slices`` evenly spread slices of each sample, each
    predicted from its neighbours as in inference; volume models: whole samples.
    With ``keep_first`` the first sample's middle evaluated slice (image,
    truth, probability) is returned too.
    """
    import torch

    from pipeline.segment.infer import plan_tiles
    from pipeline.segment.predictor import TorchPredictor
    from pipeline.segment.tiling import predict_region
    from pipeline.analyze.confusion import FIELDS

    module = getattr(net, "module", net)
    was_training = module.training
    module.eval()
    predictor = TorchPredictor(LoadedModel(net=module, card=card, folder=Path(".")), device=device)
    total = np.zeros(len(FIELDS))
    kept = None
    ids = _val_ids(view, split, limit)
    share = ids[rank::world]
    pre = card.input.preprocess
    with torch.inference_mode():
        for n, i in enumerate(share):
            img = prepare_image(view.image(i), pre)
            lab = view.labels(i)
            shape = lab.shape
            plan = plan_tiles(card, shape)
            if card.input.kind == "slices":
                zs = np.unique(np.linspace(0, shape[0] - 1, min(val_slices, shape[0])).round().astype(int))
                probs = np.stack([
                    predict_region(img[None], (0, 0, 0), (slice(int(z), int(z) + 1), slice(0, shape[1]), slice(0, shape[2])),
                                   shape, tile=plan.tile, step=plan.step, predict=predictor, neighbours=plan.neighbours,
                                   batch_size=card.inference.batch_size, sigma_scale=card.inference.sigma_scale)[0, 0]
                    for z in zs])
                total += counts(probs, lab[zs], threshold=card.inference.threshold)
                if keep_first and n == 0:
                    mid = len(zs) // 2
                    kept = {"image": img[zs[mid]], "truth": lab[zs[mid]], "probability": probs[mid], "z": int(zs[mid])}
            else:
                inp = np.stack([view.prob(i), img])
                p = predict_region(inp, (0, 0, 0), tuple(slice(0, s) for s in shape), shape, tile=plan.tile, step=plan.step,
                                   predict=predictor, batch_size=card.inference.batch_size,
                                   sigma_scale=card.inference.sigma_scale)[0]
                total += counts(p, lab, threshold=card.inference.threshold, smoothness=True)
                if keep_first and n == 0:
                    z = shape[0] // 2
                    kept = {"image": img[z], "truth": lab[z], "probability": p[z], "input_probability": inp[0, z], "z": z}
    if was_training:
        module.train()
    return total, kept


def _checkpoint_epoch(folder: Path) -> int:
    try:
        return int(json.loads((Path(folder) / "state.json").read_text())["epoch"])
    except (OSError, KeyError, ValueError):
        return -1


def _log_start(root: Path, start: int, world: int, checkpoint: str | None) -> None:
    """One line per start of the loop in ``starts.jsonl``: where it resumed from (a restart after a failure shows here)."""
    root.mkdir(parents=True, exist_ok=True)
    line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "start_epoch": start, "workers": world, "checkpoint": checkpoint}
    with open(root / "starts.jsonl", "a") as fh:
        fh.write(json.dumps(line) + "\n")


def _save_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(np.clip(np.rint(np.asarray(arr, dtype=np.float64) * 255), 0, 255).astype(np.uint8)).save(tmp, format="PNG")
    os.replace(tmp, path)


def train_worker(config: dict[str, Any], session: Any = None) -> None:
    """Train one worker's part of a run (``train_loop_per_worker`` of Ray Train).

    ``config`` is made by :func:`pipeline.train.run.worker_config`: the
    settings, the model card to fill in, the data, the run folder paths, the
    seed and the stage hash.
    """
    import torch

    from pipeline.models.folder import load_model
    from pipeline.models.losses import make_loss
    from pipeline.models.nets import build_network
    from pipeline.segment.predictor import set_torch_threads
    from pipeline.train.augment import AugmentParams, augment_batch
    from pipeline.train.session import current_session

    session = session or current_session()
    rank, world, device = session.rank, session.world, session.device
    set_torch_threads(config.get("threads"))
    s = config["settings"]
    kind = config["kind"]
    card = ModelCard.model_validate(config["card"])
    root = Path(config["root"])
    paths = history_paths(root)
    seed = int(config["seed"])
    stage_hash = str(config["stage_hash"])
    view = open_training_data(config["dataset"], probability=config.get("probability"),
                              need=(s["train_split"], s["val_split"]))

    torch.manual_seed(seed)
    net = build_network({"name": card.architecture.name, **card.architecture.kwargs()})
    if config.get("init"):
        net.load_state_dict(load_model(config["init"]).net.state_dict(), strict=True)
    precision = resolve_precision(s.get("precision", "fp32"), device)
    # oneDNN's fast layout on CPUs: 2D 1.3x, 3D 1.2x faster bf16 training steps (AMX, stop 21)
    layout = None if device.startswith("cuda") else (torch.channels_last if card.architecture.dims == 2
                                                     else torch.channels_last_3d)
    if layout is not None:
        net = net.to(memory_format=layout)
    model = session.prepare(net)
    opt = torch.optim.AdamW(model.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
    loss_fn = make_loss(**s["loss"])
    aug = AugmentParams(**s["augment"])
    image_channels = list(range(card.architecture.in_channels)) if kind == "slices" else [1]
    patch = s["patch"]
    k = card.input.slices

    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    start = 0
    with session.restored() as restored:
        # Ray hands back the last checkpoint every worker reported; the run folder may hold a newer
        # one that rank 0 wrote before a worker died (or the one of a killed `porelab run`).
        local = latest_checkpoint(paths["checkpoints"], stage_hash=stage_hash)
        ckpt = max((c for c in (restored, local) if c is not None), key=_checkpoint_epoch, default=None)
        if ckpt is not None:
            state = load_checkpoint(ckpt, net=net, optimizer=opt)
            start, history, best = int(state["epoch"]), list(state.get("history", [])), state.get("best")
    if rank == 0:
        _log_start(root, start, world, None if ckpt is None else str(ckpt))
    epochs, steps = int(s["epochs"]), int(s["steps_per_epoch"])
    total_steps, warmup = epochs * steps, int(round(float(s["warmup_epochs"]) * steps))
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        torch.manual_seed(seed + 7919 * (epoch + 1) + rank)
        sampler = PatchSampler(view, s["train_split"], kind=kind, patch=patch, k=k, preprocess=card.input.preprocess,
                               n_batches=steps, batch_size=s["batch_size"], seed=seed, epoch=epoch, rank=rank,
                               world=world, buffer=s["buffer"])
        aug_rng = np.random.default_rng(np.random.SeedSequence([seed, 13, epoch, rank]))
        model.train()
        loss_sum = 0.0
        t_data = t_step = 0.0
        for step, batch in enumerate(sampler):
            t1 = time.perf_counter()
            lr = learning_rate(epoch * steps + step, total_steps, warmup, float(s["lr"]))
            for g in opt.param_groups:
                g["lr"] = lr
            xb, yb = augment_batch(batch.x, batch.y, aug_rng, aug, image_channels)
            x = torch.from_numpy(xb).to(device)
            if layout is not None:
                x = x.contiguous(memory_format=layout)
            y = torch.from_numpy(yb).to(device)
            t2 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = model(x)
            loss = loss_fn(logits.float(), y)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach())
            t_data += t2 - t1
            t_step += time.perf_counter() - t2
        train_seconds = time.perf_counter() - t0
        red = session.all_reduce(np.array([loss_sum, steps, train_seconds]))
        val_counts, kept = validate(model, card, view, split=s["val_split"], limit=s.get("val_samples"),
                                    val_slices=int(s.get("val_slices", 16)), rank=rank, world=world, device=device,
                                    keep_first=rank == 0)
        val = summarize(session.all_reduce(val_counts))
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": red[0] / max(red[1], 1),
            "lr": lr,
            "seconds": time.perf_counter() - t0,
            "train_seconds": train_seconds,
            "samples_per_second": steps * s["batch_size"] * world / max(red[2] / world, 1e-9),
            "data_fraction": t_data / max(train_seconds, 1e-9),
            "precision": precision,
            **{f"val_{key}": v for key, v in val.items()},
        }
        history.append(row)
        if best is None or row["val_mean_iou"] > best["score"]:
            best = {"epoch": epoch + 1, "score": row["val_mean_iou"]}
        ckpt_path = None
        if rank == 0:
            state = {"history": history, "best": best, "stage_hash": stage_hash, "seed": seed}
            ckpt_path = save_checkpoint(paths["checkpoints"], epoch + 1, net=model, optimizer=opt, state=state)
            from pipeline.train.checkpoint import checkpoint_name

            prune_checkpoints(paths["checkpoints"], keep=2, protect=(checkpoint_name(best["epoch"]),))
            _write_history(root, history)
            if kept is not None:
                _save_png(paths["epochs"] / f"epoch-{epoch + 1:04d}.png", kept["probability"])
                if epoch == start:
                    _save_png(paths["epochs"] / "image.png", kept["image"])
                    _save_png(paths["epochs"] / "truth.png", kept["truth"].astype(np.float32))
        session.report(row, ckpt_path)
    if rank == 0:
        _finish(config, card, net, model, view, history, best, paths, device)


def _finish(config: dict[str, Any], card: ModelCard, net: Any, model: Any, view: DatasetView,
            history: list[dict[str, Any]], best: dict[str, Any] | None, paths: dict[str, Path], device: str) -> None:
    """Write the model folder (best or last epoch) and the figures."""
    from pipeline.train import plots
    from pipeline.train.checkpoint import checkpoint_name

    s = config["settings"]
    chosen = history[-1]["epoch"] if s["keep"] == "last" or best is None else best["epoch"]
    ckpt = paths["checkpoints"] / checkpoint_name(chosen)
    if ckpt.is_dir():
        load_checkpoint(ckpt, net=net)
    row = next(r for r in history if r["epoch"] == chosen)
    val = {k.removeprefix("val_"): v for k, v in row.items() if k.startswith("val_")}
    training = dict(card.training)
    training.update(
        epochs=len(history), chosen_epoch=chosen, keep=s["keep"],
        seconds=round(sum(r["seconds"] for r in history), 1),
        samples_per_second=round(float(np.mean([r["samples_per_second"] for r in history])), 2),
        precision=history[-1].get("precision", "fp32"),
    )
    out = card.model_copy(update={"metrics": {**card.metrics, "val": val}, "training": training})
    save_model(paths["model"], net, out)
    figures = paths["figures"]
    figures.mkdir(parents=True, exist_ok=True)
    plots.write_png(figures / "curves.png", plots.curves_plot(history))
    epochs_png = plots.epochs_plot(paths["epochs"])
    if epochs_png is not None:
        plots.write_png(figures / "epochs.png", epochs_png)
    _, kept = validate(net, out, view, split=s["val_split"], limit=1, val_slices=3, rank=0, world=1, device=device,
                       keep_first=True)
    if kept is not None:
        plots.write_png(figures / "prediction.png", plots.prediction_plot(kept, out.inference.threshold))


