"""``porelab segment``: pore probability and mask of a preprocessed volume by a U-Net (and its 3D refinement)."""

from __future__ import annotations

import argparse
import sys

from pipeline.cli._common import add_parser, numbers

__all__ = ["register"]


_ints = numbers(int, (2, 3), "Y,X (or Z,Y,X)", " in voxels")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub,
        "segment",
        help="segment a preprocessed volume into pore probability and mask with a U-Net (and refine it in 3D)",
        description=(
            "Read IN.zarr (float32 in [0, 1], the output of 'porelab preprocess'; with --preprocess any grey volume)\n"
            "and write OUT.zarr with 'mask' (uint8, 1 = pore), 'probability' (float16) and, with --tta, 'uncertainty'\n"
            "(spread over test-time flips). The 2D / 2.5D model runs over tiles on one grid of the whole volume,\n"
            "blended with gaussian weights, block by block on a local Dask cluster (the result does not depend on the\n"
            "chunking). --refine adds the 3D refinement; the 2D probability is then kept as 'probability_2d'."
        ),
        example="porelab segment preprocessed.zarr -o segmented.zarr --model runs/train/train2d/model --tta",
    )
    p.add_argument("input", help="preprocessed volume store (IN.zarr)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.zarr", help="store to write")
    p.add_argument("--model", default="default", metavar="DIR", help="2D / 2.5D model folder or shipped model name (default: the shipped one)")
    p.add_argument("--refine", default="auto", metavar="DIR",
                   help="3D refinement model folder or name; 'none' to skip; 'auto' (default): the shipped one with the shipped 2D model")
    p.add_argument("--tta", action="store_true", help="average over test-time flips and write their spread as 'uncertainty'")
    p.add_argument("--preprocess", action="store_true", help="denoise and normalise a raw volume as the model's training data was")
    p.add_argument("--tile", type=_ints, default=None, metavar="Y,X", help="tile of the 2D model in pixels (default: the model's)")
    p.add_argument("--overlap", type=float, default=None, metavar="F", help="tile overlap in [0, 1) (default: the model's)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N", help="tiles per forward pass (default: the model's)")
    p.add_argument("--threshold", type=float, default=None, metavar="P", help="pore probability from which a voxel is pore")
    p.add_argument("--resample", action="store_true",
                   help="segment at the voxel size the model was trained at (linear resampling there and back)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.zarr if it exists")
    p.add_argument("--workers", type=int, default=None, help="local Dask workers (default: one per core)")
    p.add_argument("--memory-limit", default=None, metavar="SIZE", help="memory limit per worker, e.g. 2GiB")
    p.add_argument("--dask", default=None, metavar="tcp://HOST:PORT", help="use a running Dask scheduler")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the network runs (cuda: one local worker)")
    p.add_argument("--runtime", choices=["auto", "torch", "torch-bf16", "onnx"], default="auto",
                   help="what runs the network: torch (fp32), torch-bf16 (bf16 autocast) or ONNX Runtime; auto: "
                        "torch-bf16 on CPUs with AMX and on CUDA with bf16, else ONNX Runtime on CPUs where installed, else torch")
    p.set_defaults(func=_run)


def _refine_ref(args: argparse.Namespace) -> str | None:
    if args.refine == "none":
        return None
    if args.refine != "auto":
        return args.refine
    from pipeline.models.folder import DEFAULT_MODELS, builtin_models

    return "default" if args.model == "default" and DEFAULT_MODELS["refine"] in builtin_models() else None


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import shutil

    import dask.array as da

    from pipeline.engine.blocks import nesting_chunks, store_blocks
    from pipeline.engine.dask_cluster import dask_client, threads_per_task, worker_memory
    from pipeline.errors import UserError
    from pipeline.io.volume import (DEFAULT_CHUNKS, as_volume, atomic_dir, consolidate_store, create_group_store, open_volume,
                                    provenance, voxel_size_of)
    from pipeline.segment.infer import block_budget
    from pipeline.segment.predictor import resolve_runtime
    from pipeline.segment.volume import (SegmentOptions, check_voxel_size, load_for, refine_block_chunks, refine_volume,
                                         segment_volume)

    if args.overlap is not None and not 0 <= args.overlap < 1:
        raise UserError(f"--overlap {args.overlap} is not valid; expected a number in [0, 1)")
    if args.threshold is not None and not 0 < args.threshold < 1:
        raise UserError(f"--threshold {args.threshold} is not valid; expected a number in (0, 1)")
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise UserError(f"{out}: already exists; pass --overwrite to replace it")
    vol = open_volume(args.input)
    refine = _refine_ref(args)
    # the inputs and models are checked (a lazy graph built and dropped) before any worker starts
    segment_volume(vol, SegmentOptions(model=args.model, tile=args.tile, overlap=args.overlap, preprocess=args.preprocess),
                   where=args.input)
    if refine is not None:
        load_for(SegmentOptions(model=refine), "refine")
    workers = 1 if args.device == "cuda" else args.workers
    with dask_client(args.dask, n_workers=workers, memory_limit=args.memory_limit,
                     local_directory=out.resolve().parent / ".dask-scratch") as client:
        mem = worker_memory(client)
        runtime = resolve_runtime(args.runtime, args.device, memory_limit=mem)
        opts = SegmentOptions(model=args.model, tta=args.tta, tile=args.tile, overlap=args.overlap, batch_size=args.batch_size,
                              threshold=args.threshold, preprocess=args.preprocess, device=args.device,
                              threads=threads_per_task(client), runtime=runtime, resample=args.resample,
                              budget_bytes=block_budget(mem, runtime))
        seg = segment_volume(vol, opts, where=args.input)
        warn = None if args.resample else check_voxel_size(seg.card, vol.attrs.get("voxel_size_nm"))  # type: ignore[arg-type]
        if warn:
            print(f"porelab segment: warning: {warn}", file=sys.stderr)
        variables = dict(seg.variables)
        if refine is not None:
            variables["probability_2d"] = variables["probability"]
        attrs = {**{k: v for k, v in vol.attrs.items() if k not in ("provenance", "meaning")}, **seg.attrs, "image_store": str(args.input),
                 "provenance": provenance("segment", {"model": str(seg.folder), "refine": refine, "tta": args.tta})}
        template = as_volume(vol.data, voxel_size_of(vol), name="mask", attrs=attrs)
        image = None
        if refine is not None:
            image = vol if vol.dtype.kind == "f" else None
            if image is None:
                from pipeline.segment.volume import preprocess_for

                image = preprocess_for(vol, seg.card)  # type: ignore[arg-type]
            # each 3D tile computed once; its sums wait beside the output until it is written
            scratch = out.resolve().parent / f".{out.name}.tiles"
            shutil.rmtree(scratch, ignore_errors=True)  # sums of an earlier, other input are never reused
            refine_opts = SegmentOptions(**{**opts.__dict__, "model": refine, "tta": False, "scratch": scratch})
        store_chunks = tuple(min(int(c), int(s)) for c, s in zip(DEFAULT_CHUNKS, vol.shape))
        # every variable in chunks that the blocks computing it are whole multiples of: each block computed once
        chunks_2d = nesting_chunks(seg.data.chunks[1:], store_chunks)
        if refine is None:
            variable_chunks = {n: chunks_2d for n in variables}
        else:
            chunks_3d = nesting_chunks(refine_block_chunks(tuple(vol.shape), refine_opts), store_chunks)
            variable_chunks = {n: (chunks_3d if n in ("mask", "probability") else chunks_2d) for n in variables}
        with atomic_dir(out, overwrite=args.overwrite) as tmp:
            targets = create_group_store(tmp, template, variables, variable_chunks=variable_chunks)
            if refine is None:
                store_blocks(seg.data, [targets[n] for n in seg.variables], markers=None, progress="segment", cover_data_chunks=True,
                             max_block_bytes=opts.budget_bytes)
            else:
                first = ["probability_2d"] + (["uncertainty"] if args.tta else [])
                store_blocks(da.stack([seg.data[1], *([seg.data[2]] if args.tta else [])]), [targets[n] for n in first],
                             markers=None, progress="segment 2D", cover_data_chunks=True,
                             max_block_bytes=opts.budget_bytes)
                ref = refine_volume(open_volume(tmp, "probability_2d"), image, refine_opts,
                                    where=f"{out} (probability_2d)", image_where=args.input)
                store_blocks(ref.data, [targets["mask"], targets["probability"]], markers=None, progress="refine 3D", cover_data_chunks=True,
                             max_block_bytes=opts.budget_bytes)
                shutil.rmtree(scratch, ignore_errors=True)
                import zarr

                zarr.open_group(tmp, mode="r+").attrs.update({"refine_model": ref.attrs["model"]})
                consolidate_store(tmp)
    written = open_volume(out)
    porosity = float(written.data.mean().compute())
    print(f"{out}: {' x '.join(map(str, written.shape))}, porosity {porosity:.4f} (model {seg.attrs['model']['name']}"
          f"{', refined by ' + str(refine) if refine else ''})", file=sys.stdout)
    return 0
