"""Inputs cut from volumes: mirrored indices, 2.5D neighbours at the ends, tiles of short axes."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.models.inputs import effective_tile, neighbour_indices, pad_to, reflect_index


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_reflect_index_is_numpys_reflect_padding(n: int) -> None:
    a = np.arange(n)
    padded = np.pad(a, 20, mode="reflect") if n > 1 else np.pad(a, 20, mode="edge")
    idx = np.arange(-20, n + 20)
    assert np.array_equal(a[reflect_index(idx, n)], padded)
    assert [reflect_index(int(i), n) for i in idx] == padded.tolist()


def test_neighbours_are_mirrored_at_the_first_and_last_slices() -> None:
    assert neighbour_indices(0, 3, 10) == [1, 0, 1]
    assert neighbour_indices(9, 3, 10) == [8, 9, 8]
    assert neighbour_indices(0, 5, 10) == [2, 1, 0, 1, 2]
    assert neighbour_indices(5, 5, 10) == [3, 4, 5, 6, 7]
    assert neighbour_indices(0, 3, 1) == [0, 0, 0]
    with pytest.raises(ValueError, match="odd"):
        neighbour_indices(0, 4, 10)


def test_effective_tile_rounds_short_axes_up_to_the_divisor() -> None:
    assert effective_tile(150, 256, 16) == 160
    assert effective_tile(300, 256, 16) == 256
    assert effective_tile(5, 64, 8) == 8


def test_pad_to_mirrors_and_never_changes_the_input() -> None:
    a = np.arange(12.0).reshape(3, 4)
    b = pad_to(a, (6,), (1,))
    assert b.shape == (3, 6) and np.array_equal(b[:, 4:], a[:, [2, 1]])
    assert pad_to(a, (4,), (1,)) is a
    with pytest.raises(ValueError, match="more than"):
        pad_to(a, (2,), (1,))
