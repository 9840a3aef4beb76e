"""Job files: what validates, and the one-sentence errors for what does not."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.cli.main import main
from pipeline.errors import UserError
from pipeline.jobs.models import load_job, spec_hash

GOOD = {
    "name": "demo-1",
    "seed": 7,
    "stages": [{"stage": "ingest", "path": "stack.tif", "voxel_size_nm": [10, 5, 5]}],
}


def _write(tmp_path: Path, data: object) -> Path:
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def _with(**changes: object) -> dict:
    job = yaml.safe_load(yaml.safe_dump(GOOD))
    job.update(changes)
    return job


def test_valid_job(tmp_path: Path) -> None:
    spec = load_job(_write(tmp_path, GOOD))
    assert spec.name == "demo-1" and spec.seed == 7
    assert spec.stage_names() == ["ingest"]
    assert spec.stages[0].voxel_size_nm == (10.0, 5.0, 5.0)


@pytest.mark.parametrize(
    ("job", "words"),
    [
        (_with(colour="red"), ["colour", "not a known key"]),
        (_with(seed="many"), ["seed", "many"]),
        (_with(seed=-1), ["seed", "-1"]),
        (_with(name="../escape"), ["name", "../escape"]),
        (_with(name="/abs/path"), ["name", "/abs/path"]),
        (_with(name="a..b"), ["name", "'..'"]),
        (_with(stages=[]), ["stages"]),
        (_with(stages=[{"stage": "teleport"}]), ["teleport", "unknown", "ingest"]),
        (_with(stages=[{"stage": "ingest", "path": "s.tif", "voxel_size_nm": [0, 1, 1]}]), ["stages[1]", "voxel_size_nm"]),
        (_with(stages=[{"stage": "ingest", "path": "s.tif", "voxel_size_nm": [1, 1, 1], "extra": 1}]), ["stages[1]", "extra"]),
        (_with(stages=[{"stage": "ingest", "path": "s.tif", "sample": -1}]), ["sample", "-1"]),
        (_with(engine={"dask": {"memory_limit": "lots"}}), ["memory_limit", "lots"]),
        (_with(engine={"backend": "opencl"}), ["backend", "opencl"]),
        (
            _with(stages=[GOOD["stages"][0], dict(GOOD["stages"][0])]),
            ["named 'ingest'", "unique"],
        ),
        (
            _with(stages=[dict(GOOD["stages"][0], input="later")]),
            ["later", "not an earlier stage"],
        ),
    ],
)
def test_invalid_job_is_one_clear_sentence(tmp_path: Path, job: dict, words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, job)
    with pytest.raises(UserError) as info:
        load_job(path)
    msg = str(info.value)
    assert msg.startswith(str(path))
    for word in words:
        assert word in msg, msg
    assert "\n" not in msg
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(path) in err


def test_not_yaml(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not valid YAML at line [23]"):
        load_job(_write(tmp_path, "name: x\nstages: [\n"))


def test_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="expected a mapping"):
        load_job(_write(tmp_path, "- a\n- b\n"))


def test_missing_job_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such job file"):
        load_job(tmp_path / "nope.yaml")


def test_yaml_tags_are_not_executed(tmp_path: Path) -> None:
    text = "name: x\nseed: !!python/object/apply:os.system ['echo pwned']\nstages: []\n"
    with pytest.raises(UserError, match="not valid YAML"):
        load_job(_write(tmp_path, text))


def test_spec_hash_ignores_where_it_runs(tmp_path: Path) -> None:
    a = load_job(_write(tmp_path, GOOD))
    b = load_job(_write(tmp_path, _with(engine={"dask": {"address": "tcp://127.0.0.1:8786", "n_workers": 3}})))
    c = load_job(_write(tmp_path, _with(seed=8)))
    assert spec_hash(a) == spec_hash(b)
    assert spec_hash(a) != spec_hash(c)


def test_validate_cli_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(_write(tmp_path, GOOD))]) == 0
    assert "valid job 'demo-1'" in capsys.readouterr().out
