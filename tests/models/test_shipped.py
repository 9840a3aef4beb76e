"""The models that ship inside the package: present, intact, small, honest about their test metrics."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.models.folder import DEFAULT_MODELS, WEIGHTS, builtin_models, file_sha256, read_card, resolve_model
from pipeline.models.ship import MAX_BYTES


def test_every_default_model_ships() -> None:
    shipped = builtin_models()
    for task, name in DEFAULT_MODELS.items():
        assert name in shipped, f"no {task} model ships"
        assert resolve_model("default", task=task) == shipped[name]


@pytest.mark.parametrize("task", sorted(DEFAULT_MODELS))
def test_weights_match_their_card_and_carry_test_metrics(task: str) -> None:
    folder = resolve_model("default", task=task)
    card = read_card(folder)
    assert file_sha256(folder / WEIGHTS) == card.weights_sha256
    test = card.metrics["test"]
    # the card says how it did on held-out stacks, beside the threshold baseline on the same stacks
    assert {"all", "baseline all"} <= set(test)
    assert 0.5 < test["all"]["iou_pore"] <= 1.0 and 0.0 <= test["all"]["porosity_abs_error"] < 0.5
    assert (folder / "README.md").read_text().count("baseline") >= 1


def test_shipped_weights_stay_small() -> None:
    total = sum((resolve_model("default", task=t) / WEIGHTS).stat().st_size for t in DEFAULT_MODELS)
    assert total < MAX_BYTES


def test_the_shipped_pair_segments_a_rendered_stack_better_than_chance() -> None:
    from pipeline.segment.infer import predict_volume
    from pipeline.synth.render_builtin import render_builtin
    from pipeline.synth.structures import random_spheres
    from pipeline.train.data import prepare_image

    labels = random_spheres((24, 96, 96), porosity=0.5, median_nm=80.0, sigma=0.3, seed=3).labels
    seg, ref = resolve_model("default", task="segment"), resolve_model("default", task="refine")
    card, rcard = read_card(seg), read_card(ref)
    rendered = render_builtin(labels, (10.0, 10.0, 10.0), seed=3)
    img, labels = prepare_image(rendered.image, card.input.preprocess), rendered.labels  # labels registered to the image
    p = predict_volume(img, seg, card, runtime="onnx")[0]
    q = predict_volume(np.stack([p, img]), ref, rcard, runtime="onnx")[0]
    for prob in (p, q):
        mask = prob >= 0.5
        inter = np.logical_and(mask, labels == 1).sum()
        union = np.logical_or(mask, labels == 1).sum()
        assert inter / union > 0.6  # a mask of all pore would score 0.5 here, a random one about 0.33
