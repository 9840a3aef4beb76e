"""The command line: verbs listed in --help, each with an example."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.cli.main import COMMANDS, main


def test_help_lists_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for verb in COMMANDS:
        assert f"    {verb} " in out or f"    {verb}\n" in out, verb


@pytest.mark.parametrize("verb", COMMANDS)
def test_every_verb_has_help_with_example(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([verb, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out and f"porelab {verb}" in out


def test_python_dash_m() -> None:
    out = subprocess.run([sys.executable, "-m", "pipeline", "--help"], capture_output=True, text=True, check=True).stdout
    assert "ingest" in out and "run" in out


def test_no_verb_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "usage: porelab" in capsys.readouterr().out


def test_unknown_verb_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["teleport"])
    assert exc.value.code == 2
