"""``porelab models``: the models that ship with porelab, and any model folder's card."""

from __future__ import annotations

import argparse
import sys

from pipeline.cli._common import add_parser

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = add_parser(
        sub,
        "models",
        help="list the shipped models, or print a model's card",
        description=(
            "Without an argument: the models inside the package (the defaults of 'porelab segment') with their task,\n"
            "network and test metrics. With NAME or DIR: that model's card (README.md generated from model.json)."
        ),
        example="porelab models segment-default",
    )
    p.add_argument("model", nargs="?", default=None, metavar="NAME|DIR", help="a shipped model's name or a model folder")
    p.add_argument("--json", action="store_true", help="print model.json instead of the card")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pipeline.models.card import card_markdown
    from pipeline.models.folder import DEFAULT_MODELS, builtin_models, read_card, resolve_model

    if args.model is not None:
        card = read_card(resolve_model(args.model))
        sys.stdout.write(card.to_json() + "\n" if args.json else card_markdown(card))
        return 0
    shipped = builtin_models()
    if not shipped:
        print("no models ship with this porelab; train one with 'porelab train jobs/train-default.yaml'")
        return 0
    defaults = {v: k for k, v in DEFAULT_MODELS.items()}
    for name, folder in shipped.items():
        card = read_card(folder)
        a = card.architecture
        test = (card.metrics.get("test") or {}).get("all") or card.metrics.get("val") or {}
        quality = ", ".join(f"{k} {test[k]:.4g}" for k in ("accuracy", "iou_pore", "iou_solid", "porosity_abs_error") if k in test)
        default = f" (default {defaults[name]} model)" if name in defaults else ""
        print(f"{name}{default}: {card.task}, {a.dims}D U-Net, {card.input.slices} slice(s), {card.parameters:,} parameters; {quality}")
        print(f"  {folder}")
    return 0
