"""The command line: fast help that imports no TensorFlow, one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys

from landmarks import cli
from landmarks.errors import DataError


def test_help_lists_commands_without_importing_tensorflow():
    code = (
        "import sys, landmarks.cli as c; c.build_parser().format_help(); "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]


def test_help_runs_as_module():
    result = subprocess.run(
        [sys.executable, "-m", "landmarks", "--help"], capture_output=True, text=True, check=True
    )
    assert "usage: python -m landmarks" in result.stdout


def test_landmarks_error_is_one_line_with_status_2(monkeypatch, capsys):
    def register_failing(subparsers):
        parser = subparsers.add_parser("fail")

        def handler(args):
            raise DataError("train.csv row 3: landmark_id 'x' is not an integer")

        parser.set_defaults(handler=handler)

    monkeypatch.setattr(cli, "_REGISTRARS", [register_failing])
    assert cli.main(["fail"]) == 2
    err = capsys.readouterr().err
    assert err == "error: train.csv row 3: landmark_id 'x' is not an integer\n"


def test_no_command_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "usage:" in capsys.readouterr().out
