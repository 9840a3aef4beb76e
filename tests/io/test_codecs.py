"""The codec chooser: names, the auto test on a sample, and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.io.codecs import AUTO_MIN_RATIO, CODEC_NAMES, check_codec_name, choose_codec, compressors_named, sample_ratio

CHUNKS = (8, 32, 32)


def _noise(shape: tuple[int, int, int] = (8, 96, 96)) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 65536, size=shape, dtype=np.uint16)


def _smooth(shape: tuple[int, int, int] = (8, 96, 96)) -> np.ndarray:
    z, y, x = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]]
    return (20000 + 100 * z + 50 * np.sin(x / 9.0) * np.cos(y / 11.0)).astype(np.uint16)


def test_auto_stores_noise_raw() -> None:
    choice = choose_codec("auto", _noise(), CHUNKS)
    assert choice.name == "none" and choice.requested == "auto"
    assert choice.sample_ratio is not None and choice.sample_ratio < AUTO_MIN_RATIO
    assert "raw" in choice.reason


def test_auto_compresses_a_smooth_image() -> None:
    choice = choose_codec("auto", _smooth(), CHUNKS)
    assert choice.name == "lz4"
    assert choice.sample_ratio is not None and choice.sample_ratio >= AUTO_MIN_RATIO


def test_auto_follows_the_threshold() -> None:
    smooth = _smooth()
    ratio = sample_ratio(smooth, CHUNKS)
    assert choose_codec("auto", smooth, CHUNKS, min_ratio=ratio * 1.01).name == "none"
    assert choose_codec("auto", smooth, CHUNKS, min_ratio=ratio * 0.99).name == "lz4"


def test_auto_can_compress_with_zstd() -> None:
    assert choose_codec("auto", _smooth(), CHUNKS, compress_with="zstd").name == "zstd"


def test_sample_is_not_the_first_chunk_alone() -> None:
    # 4 x 4 chunks per slice: a flat first chunk in noise is still noise, a noisy first chunk in a smooth image is smooth
    flat_corner = _noise((8, 128, 128))
    flat_corner[:, :32, :32] = 0
    assert choose_codec("auto", flat_corner, CHUNKS).name == "none"
    noisy_corner = _smooth((8, 128, 128))
    noisy_corner[:, :32, :32] = _noise((8, 32, 32))
    assert choose_codec("auto", noisy_corner, CHUNKS).name == "lz4"


def test_sample_of_a_stack_smaller_than_a_chunk() -> None:
    assert choose_codec("auto", _noise((2, 5, 7)), CHUNKS).name == "none"


def test_sample_is_not_modified() -> None:
    img = _smooth()[:, ::2, :]  # a strided view too
    before = img.copy()
    choose_codec("auto", img, CHUNKS)
    np.testing.assert_array_equal(img, before)


@pytest.mark.parametrize("name", ["none", "lz4", "zstd"])
def test_forced_names_need_no_sample(name: str) -> None:
    choice = choose_codec(name)
    assert choice.name == name and choice.requested == name and choice.sample_ratio is None
    assert choice.to_attrs() == {"name": name, "requested": name, "reason": choice.reason}


def test_compressors_named() -> None:
    assert compressors_named("none") is None
    (lz4,) = compressors_named("lz4")
    (zstd,) = compressors_named("zstd")
    assert lz4.cname.value == "lz4" and zstd.cname.value == "zstd"


@pytest.mark.parametrize("bad", ["gzip", "LZ4", "", None])
def test_unknown_codec_is_a_clear_value_error(bad: object) -> None:
    with pytest.raises(ValueError, match="expected one of auto, none, lz4, zstd"):
        choose_codec(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is not known"):
        check_codec_name(bad)  # type: ignore[arg-type]


def test_auto_is_not_a_compressor_and_needs_a_sample() -> None:
    with pytest.raises(ValueError, match="expected one of none, lz4, zstd"):
        compressors_named("auto")
    with pytest.raises(ValueError, match="needs a sample"):
        choose_codec("auto")
    with pytest.raises(ValueError, match="must be 3D"):
        choose_codec("auto", np.zeros((4, 4), np.uint16), CHUNKS)
    with pytest.raises(ValueError, match="min_ratio"):
        choose_codec("auto", _smooth(), CHUNKS, min_ratio=0)
    with pytest.raises(ValueError, match="compress_with"):
        choose_codec("auto", _smooth(), CHUNKS, compress_with="none")

