"""Test the project on one runtime's package set, installed as the notebooks install it.

    python stacks/run_stack.py NAME [PYTEST_ARGS...]     (`make test-stacks` runs every stack)

NAME is a file stacks/NAME.txt: a pinned package list whose header says where it comes from
and, in `# key: value` lines, the stack's Python (`python: 3.13`), the Keras backend its users
get (`backend: jax`) and its own accelerator packages (`held: jax jaxlib keras ...`).

1. A venv .stacks/NAME made with that Python, holding only the list (`pip install -r`), plus
   the test tooling of requirements-dev.txt (pytest, papermill, ipykernel...) constrained to
   the list's resolved versions; made once (a stamp file), reused after.
2. The landmarks wheel built from this checkout and installed as a notebook's install cell
   does: `pip install --no-index --no-deps --find-links WHEELS landmarks`, then
   `install_missing(WHEELS)` with KERAS_BACKEND set to the stack's backend.
3. The held packages must have the versions step 1 gave them (none replaced).
4. pytest: tests/test_kaggle_dry_run.py (notebooks 01 -> 02 -> 03 through papermill) and the
   tests marked `backends`, on the stack's backend, importing the installed wheel (no src/ on
   the path).
5. One Markdown table row (the held packages' versions, TensorFlow's and h5py's after the
   install, the result, the date and the minutes of each step) appended to .stacks/results.md
   and printed.

Exit status 0 when every step passed. Python for the stack: PYTHON_3_13 (for 3.13; PYTHON_3_12
...) when set, else python3.13 on PATH, else a pyenv installation ~/.pyenv/versions/3.13*.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STACKS = REPO / "stacks"
WORK = REPO / ".stacks"
TOOLING = ("pytest", "papermill", "ipykernel", "nbclient", "nbformat")
REPORTED = ("tensorflow", "tensorflow-cpu", "h5py")  # shown after the install, held or not


def read_stack(name: str) -> dict:
    """The stack file's `# key: value` header lines (python, backend, held) as a dict; held is a
    list. SystemExit naming the file and key when one is missing."""
    path = STACKS / f"{name}.txt"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in STACKS.glob("*.txt")))
        raise SystemExit(f"error: {path}: no such stack (known: {known})")
    header = dict(re.findall(r"^# (python|backend|held): *(.+?) *$", path.read_text(), re.M))
    for key in ("python", "backend", "held"):
        if key not in header:
            raise SystemExit(f"error: {path}: no '# {key}: ...' line")
    header["held"] = header["held"].split()
    header["path"] = path
    return header


def find_python(version: str) -> str:
    """An interpreter of Python `version` ("3.13"): see the module docstring."""
    candidates = [os.environ.get("PYTHON_" + version.replace(".", "_"), "")]
    candidates.append(f"python{version}")
    candidates += sorted(
        glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}*/bin/python{version}"))
    )
    for candidate in filter(None, candidates):
        try:
            result = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (FileNotFoundError, PermissionError):
            continue
        if result.returncode == 0 and result.stdout.strip() == version:
            return candidate
    raise SystemExit(
        f"error: no Python {version} found (tried {', '.join(filter(None, candidates))}); "
        f"set PYTHON_{version.replace('.', '_')} to one"
    )


def versions(python: Path, names: list[str]) -> dict[str, str | None]:
    """Installed version of each distribution in `names` for interpreter `python` (None: absent)."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "def v(n):\n"
        "    try:\n        return m.version(n)\n"
        "    except m.PackageNotFoundError:\n        return None\n"
        "print(json.dumps({n: v(n) for n in sys.argv[1:]}))"
    )
    output = subprocess.run([str(python), "-c", code, *names], capture_output=True, text=True)
    return json.loads(output.stdout)


def replaced(before: dict, after: dict) -> list[str]:
    """The held packages whose version changed between `before` and `after` ("name a -> b")."""
    return [f"{n} {before[n]} -> {after.get(n)}" for n in before if after.get(n) != before[n]]


def run(command: list, **kwargs) -> int:
    print("+", " ".join(str(part) for part in command), flush=True)
    return subprocess.run([str(part) for part in command], **kwargs).returncode


def build_venv(stack: dict, venv: Path) -> None:
    """Step 1 (skipped when the stamp is newer than the stack file)."""
    stamp = venv / ".installed"
    if stamp.is_file() and stamp.stat().st_mtime > stack["path"].stat().st_mtime:
        return
    python = find_python(stack["python"])
    pip = [venv / "bin" / "python", "-m", "pip"]
    if run([python, "-m", "venv", "--clear", venv]) or run([*pip, "install", "-q", "-U", "pip"]):
        raise SystemExit(f"error: could not make the venv {venv}")
    if run([*pip, "install", "--progress-bar", "off", "-r", stack["path"]]):
        raise SystemExit(f"error: {stack['path']}: pip could not install the stack")
    frozen = venv / "stack-freeze.txt"
    frozen.write_text(
        subprocess.run([*map(str, pip), "freeze"], capture_output=True, text=True).stdout
    )
    dev = [
        line.split("#")[0].strip()
        for line in (REPO / "requirements-dev.txt").read_text().splitlines()
    ]
    tooling = [line for line in dev if line.split("==")[0] in TOOLING]
    if run([*pip, "install", "--progress-bar", "off", "-c", frozen, *tooling]):
        raise SystemExit("error: the test tooling does not install beside the stack")
    stamp.touch()


def main(argv: list[str]) -> int:
    if not argv:
        raise SystemExit(__doc__)
    name, pytest_args = argv[0], argv[1:]
    stack = read_stack(name)
    venv = WORK / name
    python = venv / "bin" / "python"
    started = time.time()
    build_venv(stack, venv)
    minutes = {"venv": (time.time() - started) / 60}
    before = versions(python, stack["held"])

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(KERAS_BACKEND=stack["backend"], PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}")
    wheels = venv / "wheels"
    step = time.time()
    build = f"from landmarks.kaggle.wheels import build_package_wheel as b; b({str(wheels)!r})"
    ok = run([python, "-c", build], env={**env, "PYTHONPATH": str(REPO / "src")}) == 0
    install = ["install", "-q", "--force-reinstall", "--no-index", "--no-deps"]
    ok = (
        ok
        and run([python, "-m", "pip", *install, "--find-links", wheels, "landmarks"], env=env) == 0
    )
    cell = f"from landmarks.kaggle.install import install_missing; install_missing({str(wheels)!r})"
    ok = ok and run([python, "-c", cell], env=env, cwd=venv) == 0
    minutes["install"] = (time.time() - step) / 60
    after = versions(python, stack["held"])
    changed = replaced(before, after)
    if changed:
        print(f"error: the install replaced the stack's own packages: {'; '.join(changed)}")

    step = time.time()
    tests = ok and not changed
    if tests:
        pytest = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args]
        dry_run = run([*pytest, "tests/test_kaggle_dry_run.py"], env=env, cwd=REPO) == 0
        backends = run([*pytest, "-m", "backends"], env=env, cwd=REPO) == 0
        tests = dry_run and backends
    minutes["tests"] = (time.time() - step) / 60

    held = ", ".join(f"{n} {v}" for n, v in after.items() if v)
    others = versions(python, [n for n in REPORTED if n not in after])
    added = ", ".join(f"{n} {v}" for n, v in others.items() if v) or "none"
    result = "passed" if ok and not changed and tests else "FAILED"
    date = datetime.datetime.fromtimestamp(started, datetime.timezone.utc)
    row = (
        f"| {name} | {stack['python']} | {stack['backend']} | {held} | {added} | {result} | "
        f"{date:%Y-%m-%d %H:%M} UTC | venv {minutes['venv']:.0f} + install "
        f"{minutes['install']:.1f} + tests {minutes['tests']:.0f} min |"
    )
    print(row)
    with open(WORK / "results.md", "a", encoding="utf-8") as handle:
        handle.write(row + "\n")
    return 0 if result == "passed" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
