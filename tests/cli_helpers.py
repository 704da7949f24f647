"""The tests' runs of the command line (landmarks.cli.main), written once."""

from __future__ import annotations

import json
from pathlib import Path

from landmarks.cli import main


def run_captured(capsys, *args) -> tuple[int, str, str]:
    """`python -m landmarks ARGS` in this process: (exit status, stdout, stderr)."""
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def write_config(path: Path, **settings) -> Path:
    """A YAML config at `path` of `key: value` lines, one per setting (values as str() gives
    them); returns `path`."""
    path.write_text("".join(f"{key}: {value}\n" for key, value in settings.items()))
    return path


def infer(config, out, *settings: str, task: str = "recognition") -> int:
    """`infer --config CONFIG --task TASK --out OUT [--set SETTING ...]`; its exit status."""
    args = ["infer", "--config", str(config), "--task", task, "--out", str(out)]
    for setting in settings:
        args += ["--set", setting]
    return main(args)


def evaluate(task: str, submission, solution, *options: str) -> int:
    """`evaluate --task TASK --submission S --solution SOL [OPTIONS]`; its exit status."""
    args = [
        "evaluate",
        "--task",
        task,
        "--submission",
        str(submission),
        "--solution",
        str(solution),
    ]
    return main([*args, *options])


def last_json(capsys) -> dict:
    """The JSON object on the last line the command printed (`--json`)."""
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])
