"""The sensitivity sweep reports the porosity spread over the baseline's parameters."""

from __future__ import annotations

import numpy as np

from pipeline.baseline import sensitivity_sweep


def test_sweep_spread(rendered: tuple[np.ndarray, np.ndarray]) -> None:
    image, _ = rendered
    grid = {"threshold_offset": (-0.05, 0.0, 0.05), "filter_size": (1.0, 5.0), "min_size": (0, 64)}
    sw = sensitivity_sweep(image, grid=grid, max_slices=6)
    por = [r["porosity"] for r in sw["runs"]]
    assert sw["spread"] == max(por) - min(por) > 0.02
    assert sw["slices"] == 6
    off = sw["by_parameter"]["threshold_offset"]["porosity"]
    assert off[0] < off[1] < off[2]  # a higher threshold counts more dark voxels as pore
    assert sw["default_porosity"] == off[1]
    # default run + one-at-a-time + the joint offset x filter grid, without duplicates
    keys = {tuple(sorted(r["params"].items())) for r in sw["runs"]}
    assert len(keys) == len(sw["runs"]) and len(sw["runs"]) == 1 + 2 + 2 + 2 + 4
    again = sensitivity_sweep(image, grid=grid, max_slices=6)
    assert again["spread"] == sw["spread"]


def test_each_filter_runs_once_and_every_setting_is_the_baseline_of_its_parameters(rendered, monkeypatch) -> None:  # noqa: ANN001
    """Settings that share a filter reuse its filtered stack, filters that share the stripe removal its
    destriped stack; the porosities are those of baseline_segment."""
    import dask.array as da

    from pipeline.baseline import BaselineParams, baseline_segment
    from pipeline.baseline import sweep as sweep_module

    image, _ = rendered
    grid = {"threshold_offset": (-0.05, 0.0, 0.05), "filter_size": (1.0, 5.0), "min_size": (0, 64), "destripe": (True, False)}
    destriped: list[bool] = []
    denoised: list[tuple[bool, float]] = []
    real_destripe, real_denoise = sweep_module.destripe_slice, sweep_module.denoise_slice

    def spy_destripe(img, p):  # noqa: ANN001, ANN202
        destriped.append(p.destripe)
        return real_destripe(img, p)

    def spy_denoise(img, p):  # noqa: ANN001, ANN202
        denoised.append((p.destripe, p.filter_size))
        return real_denoise(img, p)

    monkeypatch.setattr(sweep_module, "destripe_slice", spy_destripe)
    monkeypatch.setattr(sweep_module, "denoise_slice", spy_denoise)
    sw = sensitivity_sweep(image, grid=grid, max_slices=6)
    # the stripes removed once over the 6 slices (and the stack passed through once without)
    assert sorted(destriped) == [False] * 6 + [True] * 6
    # filters of size 3 (the default), 1 and 5 on the destriped slices, the default one on the others; each once per slice
    assert sorted(denoised) == sorted([(True, 1.0)] * 6 + [(True, 3.0)] * 6 + [(True, 5.0)] * 6 + [(False, 3.0)] * 6)
    stack = image[np.unique(np.linspace(0, image.shape[0] - 1, 6).round().astype(int))]
    for run in sw["runs"][:4] + [r for r in sw["runs"] if "destripe" in r["params"]]:
        labels, _ = baseline_segment(stack, BaselineParams().with_(**run["params"]))
        assert run["porosity"] == float(da.mean(labels).compute())
