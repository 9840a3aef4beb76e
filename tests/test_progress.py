"""Progress bars over dask computations, local and on a cluster."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from pipeline.progress import compute


@pytest.mark.parametrize("on_cluster", [False, True])
def test_compute_with_a_bar_returns_what_dask_computes(on_cluster: bool, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PORELAB_PROGRESS", "1")
    a = da.arange(1000, chunks=100)
    expected = (int((a * 2).sum().compute()), np.asarray(a[::7].compute()))
    if on_cluster:
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, Client(cluster):
            total, every7 = compute((a * 2).sum(), a[::7], desc="summing")
    else:
        total, every7 = compute((a * 2).sum(), a[::7], desc="summing")
    assert int(total) == expected[0]
    np.testing.assert_array_equal(every7, expected[1])
    assert "summing" in capsys.readouterr().err


def test_no_label_no_bar(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORELAB_PROGRESS", "1")
    (s,) = compute(da.ones(10, chunks=5).sum(), desc=None)
    assert s == 10 and capsys.readouterr().err == ""
