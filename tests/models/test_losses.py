"""Losses on pore logits: each is smaller for a better prediction; the boundary band lies on the interface."""

from __future__ import annotations

import pytest
import torch

from pipeline.models.losses import LOSSES, boundary_band, make_loss


def _target(dims: int = 2) -> torch.Tensor:
    t = torch.zeros((2, 1) + (24,) * dims)
    t[(slice(None), slice(None)) + (slice(6, 18),) * dims] = 1.0
    return t


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dims", [2, 3])
def test_a_better_prediction_has_a_smaller_loss(name: str, dims: int) -> None:
    t = _target(dims)
    loss = make_loss(name)  # type: ignore[arg-type]
    good = loss(8.0 * (2 * t - 1), t)
    meh = loss(1.0 * (2 * t - 1), t)
    bad = loss(-4.0 * (2 * t - 1), t)
    assert torch.isfinite(good) and good < meh < bad


@pytest.mark.parametrize("name", LOSSES)
def test_gradients_flow(name: str) -> None:
    t = _target()
    logits = torch.zeros_like(t, requires_grad=True)
    make_loss(name)(logits, t).backward()  # type: ignore[arg-type]
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_boundary_band_covers_both_sides_of_the_interface() -> None:
    t = _target()
    band = boundary_band(t, 2)
    row = band[0, 0, 12]
    assert row[4:8].eq(1).all() and row[16:20].eq(1).all()  # 6 and 18 are the interface
    assert row[12] == 0 and row[0] == 0
    assert boundary_band(t, 0).sum() == 0


def test_boundary_loss_weighs_errors_at_the_interface_more() -> None:
    t = _target()
    perfect = 8.0 * (2 * t - 1)
    at_edge, inside = perfect.clone(), perfect.clone()
    at_edge[0, 0, 6:18, 6] = -8.0      # the interface column wrong
    inside[0, 0, 6:18, 12] = -8.0      # a column deep inside the pore wrong
    boundary, ce = make_loss("boundary"), make_loss("ce")
    assert abs(float(ce(at_edge, t) - ce(inside, t))) < 1e-6
    assert boundary(at_edge, t) > boundary(inside, t)


def test_unknown_loss_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not one of"):
        make_loss("hinge")  # type: ignore[arg-type]
