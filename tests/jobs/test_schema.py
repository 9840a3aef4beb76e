"""The checked-in JSON Schema is the one the models generate."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from pipeline.cli.main import main
from pipeline.cli.schema import schema_text

REPO = Path(__file__).resolve().parents[2]


def test_checked_in_schema_is_current() -> None:
    checked_in = (REPO / "schemas" / "job.schema.json").read_text()
    assert checked_in == schema_text(), "schemas/job.schema.json is stale: run `make schema` and commit it"


def test_checked_in_model_schema_is_current() -> None:
    checked_in = (REPO / "schemas" / "model.schema.json").read_text()
    assert checked_in == schema_text(model=True), "schemas/model.schema.json is stale: run `make schema` and commit it"


def test_schema_cli_writes_file(tmp_path: Path) -> None:
    assert main(["schema", "--out", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["title"] == "porelab job"


@pytest.mark.parametrize("job", sorted((REPO / "jobs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_jobs_validate_against_schema(job: Path) -> None:
    schema = json.loads((REPO / "schemas" / "job.schema.json").read_text())
    jsonschema.validate(yaml.safe_load(job.read_text()), schema)
    assert main(["validate", str(job)]) == 0
