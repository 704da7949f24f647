"""The tests' runs of the command line (landmarks.cli.main), written once."""

from __future__ import annotations

import json

from landmarks.cli import main


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
