"""Kaggle from Python and the command line: download competition data, publish a folder as a
Kaggle dataset (create, or a new version), submit (the wheels, and publishing the landmarks
wheel, are landmarks.kaggle.wheels, which runs its tools through this module).

Every Kaggle call runs the official `kaggle` command-line tool as a child process started with an
argument list (never a shell string). The `kaggle` Python package is not imported here at all:
importing it without credentials prints a long help text and may exit the interpreter.

Credentials are looked up (`find_credentials`) only to fail early with a clear message and to
know the secret values; those values are never put on a command line, never logged, and every
line the child process prints is passed through `redact` before it reaches the screen or an
error message.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from landmarks.errors import ConfigError, DataError, LandmarksError
from landmarks.io_utils import extract_zip, write_text_atomic

LOG = logging.getLogger(__name__)

DEFAULT_COMPETITIONS = ("landmark-recognition-2021", "landmark-retrieval-2021")
DEFAULT_LICENSE = "CC0-1.0"
METADATA_FILE = "dataset-metadata.json"

_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{4,48})[a-z0-9]$")  # Kaggle: 6-50 chars
_NO_CREDENTIALS = (
    "no Kaggle credentials found: download an API token from https://www.kaggle.com/settings "
    "and save it as ~/.kaggle/kaggle.json (chmod 600), or set KAGGLE_USERNAME and KAGGLE_KEY, "
    "or KAGGLE_API_TOKEN (KAGGLE_CONFIG_DIR moves the kaggle.json folder)"
)


@dataclass(frozen=True)
class Credentials:
    """Where Kaggle credentials were found. `secrets` (never shown) are the values to redact."""

    source: str  # a description of the place, e.g. "~/.kaggle/kaggle.json"; never a value
    username: str | None
    secrets: tuple[str, ...] = field(default=(), repr=False)


def find_credentials(environ: dict | None = None, home: str | None = None) -> Credentials | None:
    """The first credentials the `kaggle` tool would use, or None.

    Looks, in order, at: the token Kaggle's own notebooks provide (KAGGLE_API_V1_TOKEN inside a
    Kaggle notebook), KAGGLE_API_TOKEN, KAGGLE_USERNAME + KAGGLE_KEY, kaggle.json (in
    KAGGLE_CONFIG_DIR, ~/.kaggle or ~/.config/kaggle), ~/.kaggle/access_token, and the OAuth
    cache ~/.kaggle/credentials.json of `kaggle auth login`.
    """
    env = os.environ if environ is None else environ
    home_dir = Path(home or os.path.expanduser("~"))
    env_secrets = tuple(
        v for v in (env.get("KAGGLE_KEY"), env.get("KAGGLE_API_TOKEN")) if v and len(v) >= 4
    )
    username = env.get("KAGGLE_USERNAME") or None

    if env.get("KAGGLE_KERNEL_RUN_TYPE") and env.get("KAGGLE_API_V1_TOKEN"):
        token = _read_token(Path(env["KAGGLE_API_V1_TOKEN"]))
        if token:
            return Credentials("Kaggle notebook token", username, (token, *env_secrets))
    if env.get("KAGGLE_API_TOKEN"):
        value = env["KAGGLE_API_TOKEN"]
        token = _read_token(Path(value)) if os.path.isfile(value) else value
        return Credentials(
            "KAGGLE_API_TOKEN", username, tuple(s for s in (token, *env_secrets) if s)
        )
    if username and env.get("KAGGLE_KEY"):
        return Credentials("KAGGLE_USERNAME/KAGGLE_KEY", username, env_secrets)

    config_dirs = [Path(env["KAGGLE_CONFIG_DIR"])] if env.get("KAGGLE_CONFIG_DIR") else []
    config_dirs += [
        home_dir / ".kaggle",
        Path(env.get("XDG_CONFIG_HOME") or home_dir / ".config") / "kaggle",
    ]
    for config_dir in config_dirs:
        path = config_dir / "kaggle.json"
        if path.is_file():
            values = _read_json(path)
            if not values.get("username") or not values.get("key"):
                raise ConfigError(f"{path}: expected the keys 'username' and 'key'")
            return Credentials(
                str(path), str(values["username"]), (str(values["key"]), *env_secrets)
            )
    for name in ("access_token", "access_token.txt"):
        token = _read_token(home_dir / ".kaggle" / name)
        if token:
            return Credentials(str(home_dir / ".kaggle" / name), username, (token, *env_secrets))
    oauth = home_dir / ".kaggle" / "credentials.json"
    if oauth.is_file():
        values = _read_json(oauth)
        secrets = tuple(str(v) for k, v in values.items() if k != "username" and len(str(v)) >= 8)
        return Credentials(str(oauth), values.get("username") or username, (*secrets, *env_secrets))
    return None


def require_credentials(environ: dict | None = None, home: str | None = None) -> Credentials:
    """`find_credentials`, raising LandmarksError with set-up instructions when there are none."""
    credentials = find_credentials(environ, home)
    if credentials is None:
        raise LandmarksError(_NO_CREDENTIALS)
    return credentials


def redact(text: str, secrets) -> str:
    """`text` with every secret value replaced by `***`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


# --- running the tools -----------------------------------------------------------------------


def run_tool(
    command: list[str], *, secrets=(), check: bool = True, echo: bool = True, what: str = ""
) -> tuple[int, str]:
    """Run `command` (an argument list; no shell), streaming its redacted output.

    Returns (exit status, redacted output). With `check`, a non-zero status raises
    LandmarksError quoting the last lines of output (redacted).
    """
    what = what or " ".join(command[:3])
    LOG.info("running %s", redact(" ".join(command), secrets))
    try:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
        )
    except FileNotFoundError as error:
        raise LandmarksError(f"{command[0]}: command not found ({what})") from error
    lines: list[str] = []
    tail: deque[str] = deque(maxlen=15)
    assert process.stdout is not None
    for line in process.stdout:
        clean = redact(line, secrets)
        lines.append(clean)
        tail.append(clean.rstrip())
        if echo:
            sys.stdout.write(clean)
            sys.stdout.flush()
    status = process.wait()
    if check and status != 0:
        detail = "\n".join(line for line in tail if line)
        raise LandmarksError(f"{what} failed with exit status {status}:\n{detail}")
    return status, "".join(lines)


def kaggle_command() -> list[str]:
    """The `kaggle` executable on PATH, else `python -m kaggle` of this interpreter."""
    found = shutil.which("kaggle")
    return [found] if found else [sys.executable, "-m", "kaggle"]


def pip_command() -> list[str]:
    """`python -m pip` of this interpreter: wheels are built, downloaded and installed by the
    pip of the environment (kernel) that runs landmarks, never by another `pip` on PATH."""
    return [sys.executable, "-m", "pip"]


def run_kaggle(
    args: list[str],
    *,
    credentials: Credentials | None = None,
    check: bool = True,
    echo: bool = True,
) -> tuple[int, str]:
    """Run `kaggle <args>` after checking that credentials exist; see `run_tool`."""
    credentials = credentials or require_credentials()
    return run_tool(
        [*kaggle_command(), *args],
        secrets=credentials.secrets,
        check=check,
        echo=echo,
        what=f"kaggle {' '.join(args[:2])}",
    )


# --- competition data ------------------------------------------------------------------------


def download_competition(
    competition: str, out_dir: str, *, unzip: bool = True, force: bool = False
) -> Path:
    """Download every file of `competition` into `out_dir` and (by default) unzip it there.

    The archive is extracted member by member through temporary names, then deleted; an
    interrupted run leaves the archive in place, and running again resumes from it.
    Returns the folder.
    """
    credentials = require_credentials()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"{competition}.zip"
    if not archive.exists() or force:
        args = ["competitions", "download", competition, "-p", str(out)]
        run_kaggle([*args, "--force"] if force else args, credentials=credentials)
    if unzip:
        for path in sorted(out.glob("*.zip")):
            extract_zip(path, out)
            path.unlink()
    return out


def download_competitions(
    competitions=None, out_root: str = "input", *, unzip: bool = True, force: bool = False
) -> dict[str, Path]:
    """`download_competition` for each of `competitions` (default DEFAULT_COMPETITIONS), each
    into `out_root`/<competition>. Returns {competition: folder}."""
    return {
        competition: download_competition(
            competition, os.path.join(out_root, competition), unzip=unzip, force=force
        )
        for competition in competitions or DEFAULT_COMPETITIONS
    }


# --- datasets --------------------------------------------------------------------------------


def write_dataset_metadata(
    folder: str,
    slug: str,
    *,
    owner: str,
    title: str | None = None,
    license_name: str = DEFAULT_LICENSE,
) -> dict:
    """Write `folder`/dataset-metadata.json for dataset `owner/slug`; returns the metadata."""
    if not _SLUG.match(slug):
        raise ConfigError(
            f"dataset slug {slug!r}: use 6-50 lowercase letters, digits and hyphens, "
            "starting and ending with a letter or digit"
        )
    title = title or slug.replace("-", " ").title()
    if not 6 <= len(title) <= 50:
        raise ConfigError(f"dataset title {title!r}: Kaggle needs 6-50 characters")
    metadata = {"title": title, "id": f"{owner}/{slug}", "licenses": [{"name": license_name}]}
    write_text_atomic(os.path.join(folder, METADATA_FILE), json.dumps(metadata, indent=2) + "\n")
    return metadata


def dataset_exists(dataset_id: str, *, credentials: Credentials | None = None) -> bool:
    """Whether `owner/slug` exists for these credentials (`kaggle datasets status` succeeds)."""
    status, _ = run_kaggle(
        ["datasets", "status", dataset_id], credentials=credentials, check=False, echo=False
    )
    return status == 0


def publish_dataset(
    folder: str,
    slug: str,
    *,
    owner: str | None = None,
    title: str | None = None,
    license_name: str = DEFAULT_LICENSE,
    public: bool = False,
    message: str = "New version from landmarks",
    dir_mode: str = "zip",
) -> str:
    """Upload `folder` (TFRecords, a run folder, a wheelhouse...) as the Kaggle dataset
    `owner/slug`: created when it does not exist, else a new version. Returns "owner/slug".

    `owner` defaults to the credentials' user name. Sub-folders are uploaded per `dir_mode`
    ("zip", "tar" or "skip", as the kaggle tool takes it).
    """
    path = Path(folder)
    if not path.is_dir():
        raise DataError(f"{folder}: not a folder, nothing to publish")
    if not any(p.name != METADATA_FILE for p in path.iterdir()):
        raise DataError(f"{folder}: the folder is empty, nothing to publish")
    if dir_mode not in ("zip", "tar", "skip"):
        raise ConfigError(f"dir_mode {dir_mode!r}: expected zip, tar or skip")
    credentials = require_credentials()
    owner = owner or credentials.username
    if not owner:
        raise ConfigError(
            f"dataset owner unknown (credentials from {credentials.source} carry no user name): "
            "pass --owner or set KAGGLE_USERNAME"
        )
    metadata = write_dataset_metadata(
        folder, slug, owner=owner, title=title, license_name=license_name
    )
    dataset_id = metadata["id"]
    if dataset_exists(dataset_id, credentials=credentials):
        args = ["datasets", "version", "-p", str(path), "-m", message, "--dir-mode", dir_mode]
    else:
        args = ["datasets", "create", "-p", str(path), "--dir-mode", dir_mode]
        args += ["--public"] if public else []
    run_kaggle(args, credentials=credentials)
    return dataset_id


# --- submissions -----------------------------------------------------------------------------


# The 2021 landmark competitions are code competitions: Kaggle takes a version of a notebook,
# reruns it with the hidden test set in the competition's test/ folder and scores the file it
# writes; an uploaded CSV is refused.
CODE_COMPETITIONS = frozenset({"landmark-recognition-2021", "landmark-retrieval-2021"})
NOTEBOOK_OUTPUT = "submission.csv"
_KERNEL = re.compile(r"^[A-Za-z0-9_-]+/[a-z0-9-]+$")


def submit(
    competition: str,
    file: str | None = None,
    message: str = "landmarks submission",
    *,
    kernel: str | None = None,
    version: int | None = None,
) -> None:
    """Submit to `competition`: a notebook version, or a file.

    Notebook (`kernel` "owner/slug", `version` N, default the latest): `file` is then the name
    of the file the notebook writes (default submission.csv); what code competitions take.
    File (`kernel` None): `file` is uploaded; refused at once for CODE_COMPETITIONS, naming the
    notebook route.
    """
    if kernel is None:
        if competition in CODE_COMPETITIONS:
            raise ConfigError(
                f"{competition} is a code competition: Kaggle scores a notebook version (it "
                "reruns it on the hidden test set), not an uploaded file; save a version of "
                "notebook 03 and submit it with --kernel OWNER/SLUG --version N"
            )
        if not file or not os.path.isfile(file):
            raise DataError(f"{file}: submission file not found")
        args = ["competitions", "submit", competition, "-f", file, "-m", message]
    else:
        if not _KERNEL.match(kernel):
            raise ConfigError(f"--kernel {kernel!r}: expected OWNER/NOTEBOOK-SLUG")
        if version is not None and version < 1:
            raise ConfigError(f"--version {version}: notebook versions start at 1")
        args = ["competitions", "submit", competition, "-k", kernel]
        args += ["-f", file or NOTEBOOK_OUTPUT, "-m", message]
        args += [] if version is None else ["-v", str(version)]
    run_kaggle(args, credentials=require_credentials())


# --- helpers ---------------------------------------------------------------------------------


def _read_token(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _read_json(path: Path) -> dict:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        # The message gives only the position, never the file's content.
        raise ConfigError(
            f"{path}: not valid JSON (line {error.lineno}, column {error.colno})"
        ) from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return values
