"""`export_run(run_dir, out_dir)`, the `export` command: what inference needs from a training
run, and nothing else (no checkpoints, history or plots), for a small model dataset that the
offline inference notebook attaches.

    out_dir/embed_model.keras       the run's last (or best-validation) embedding model, as is
    out_dir/config.yaml             the run's resolved config (model_path, resume_from and
                                    init_from cleared: they name the training machine's files)
    out_dir/label_map.csv           label -> landmark_id of the training records
    out_dir/embeddings/train.npz    optional: the train (+ holdout) records embedded with that
                                    model, float16, with their fingerprint
                                    (landmarks.inference.fingerprint), so that inference can
                                    skip embedding 1.6M images when nothing changed

    out_dir/export.json             the mark of an export: {"landmarks_export": 1, "files":
                                    [the files above], "host", "pid"}

The folder is written under a hidden staging name beside `out_dir` (marked from its start) and
renamed when complete. An existing `out_dir` is replaced only when it is empty or an earlier
export holding nothing but the files its export.json lists (and a `kaggle publish` metadata
file): anything else in the way is refused, named. A staging folder that a killed export left
is removed by the next export to the same folder, once its mark shows that the process that
wrote it is gone. A full disk or a read-only folder is one DataError, and an earlier export
is then left as it was.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Callable
from pathlib import Path

from landmarks.config import Config
from landmarks.errors import ConfigError, DataError
from landmarks.io_utils import write_refusals_reported

MODELS = {"last": "embed_model.keras", "best": "best_embed_model.keras"}
MARK = "export.json"
MARK_FORMAT = 1
PUBLISHING = ("dataset-metadata.json",)  # left by `kaggle publish` in an earlier export
CLEARED_KEYS = ("model_path", "resume_from", "init_from", "train_embeddings")


def export_run(
    run_dir: str,
    out_dir: str,
    *,
    model: str = "last",
    train_embeddings: bool = False,
    records_dir: str | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Write the inference export of the run folder `run_dir` to `out_dir` (local); returns it.

    model: "last" (embed_model.keras, what `infer` uses by default) or "best"
    (best_embed_model.keras, the best validation GAP). train_embeddings: also embed the train
    records (float16). records_dir: where the training records and label_map.csv are, when not
    at the run config's records_dir (e.g. another mount of the same dataset).
    """
    import tensorflow as tf

    if model not in MODELS:
        raise ConfigError(f"export --model {model!r}: expected last or best")
    config_path = os.path.join(run_dir, "config.yaml")
    if not tf.io.gfile.exists(config_path):
        raise DataError(f"{run_dir}: not a run folder (no config.yaml)")
    model_path = os.path.join(run_dir, MODELS[model])
    if not tf.io.gfile.exists(model_path):
        raise DataError(
            f"{model_path} not found: the run has not finished"
            + (" (or never validated)" if model == "best" else "")
        )
    from landmarks.data.tfrecords import read_label_map

    config = Config.load(config_path)
    config.records_dir = records_dir or config.records_dir
    read_label_map(config.records_dir)  # checked before anything is written
    out = Path(out_dir)
    _check_target(out)
    staging = out.parent / f".{out.name}.export-{uuid.uuid4().hex[:8]}"
    with write_refusals_reported(
        f"export --out {out}", "; an earlier export there is left as it was"
    ):
        _remove_stale_staging(out, log)
        try:
            staging.mkdir(parents=True)
            _write_mark(staging)  # first, so that a killed export's staging is known as ours
            _write_export(staging, model_path, config, config_path, train_embeddings, log)
            _write_mark(staging, _listing(staging))
            _replace(staging, out)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
    log(f"exported {MODELS[model]} of {run_dir} to {out}: {', '.join(_listing(out))}")
    return out


def _write_export(
    staging: Path, model_path: str, config: Config, config_path: str, train_embeddings, log
) -> None:
    """The export's files (module docstring) in the folder `staging`."""
    import tensorflow as tf

    from landmarks.data.tfrecords import LABEL_MAP
    from landmarks.io_utils import read_text

    tf.io.gfile.copy(model_path, str(staging / "embed_model.keras"))
    label_map = read_text(os.path.join(config.records_dir, LABEL_MAP))
    (staging / LABEL_MAP).write_text(label_map, encoding="utf-8")
    exported = Config.from_dict(config.to_dict(), source=config_path)
    exported.update({key: "" for key in CLEARED_KEYS}, source="export")
    exported.save(str(staging / "config.yaml"))
    if train_embeddings:
        _export_train_embeddings(config, staging, log)


def _export_train_embeddings(config: Config, staging: Path, log) -> None:
    """staging/embeddings/train.npz: the train records embedded with the exported model file
    (or read from the run folder's embedding cache when that was made by the same file)."""
    from landmarks.inference.embedding import save_embeddings
    from landmarks.inference.ensemble import EnsembleEmbeddings
    from landmarks.inference.fingerprint import embedding_fingerprint

    config.model_path = str(staging / "embed_model.keras")
    config.train_embeddings = ""
    cache_folder = staging / "_embedding_cache"  # not exported (removed below)
    embeddings = EnsembleEmbeddings(config, log=log, cache_folder=str(cache_folder))
    log("embedding train for the export ...")
    member = embeddings.members[0]
    train = embeddings.member_split(member, "train")
    save_embeddings(
        str(staging / "embeddings" / "train.npz"),
        train,
        dtype="float16",
        fingerprint=embedding_fingerprint(embeddings.model_sha256(member), config),
    )
    shutil.rmtree(cache_folder)
    log(f"embedded {len(train)} train images (float16)")


def _check_target(out: Path) -> None:
    """`out` may be absent, empty, or an earlier export holding only what its mark lists (and
    PUBLISHING); anything else is refused, naming what is in the way."""
    if not out.exists():
        return
    if not out.is_dir() or out.is_symlink():
        raise DataError(f"export --out {out}: a file or link is in the way")
    present = _listing(out, folders=True)
    if not present:
        return
    mark = read_mark(out)
    if mark is None:
        raise DataError(
            f"export --out {out}: the folder is not empty and not an earlier export (no "
            f"{MARK}): it holds {_named(present)}; export into an empty folder or an earlier export"
        )
    ours = set(mark["files"]) | {MARK, *PUBLISHING}
    ours |= {str(Path(name).parent) for name in ours}  # the folders they are in
    foreign = [name for name in present if name not in ours]
    if foreign:
        raise DataError(
            f"export --out {out}: an earlier export, but it also holds files no export wrote: "
            f"{_named(foreign)}; move them out or export elsewhere"
        )


def read_mark(folder: Path) -> dict | None:
    """The export mark (export.json) of `folder`: {"landmarks_export": 1, "files": [str],
    "host": str, "pid": int}, or None when there is none or it is not one (damaged, another
    program's file of that name): such a folder is not treated as an export."""
    path = folder / MARK
    if not path.is_file() or path.is_symlink():
        return None
    try:
        mark = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    valid = (
        isinstance(mark, dict)
        and mark.get("landmarks_export") == MARK_FORMAT
        and isinstance(mark.get("files"), list)
        and all(isinstance(name, str) for name in mark["files"])
        and isinstance(mark.get("pid"), int)
        and isinstance(mark.get("host"), str)
    )
    return mark if valid else None


def _write_mark(folder: Path, files: list[str] | None = None) -> None:
    """Mark `folder` as an export of this process holding `files` (relative paths)."""
    mark = {
        "landmarks_export": MARK_FORMAT,
        "files": sorted(name for name in files or [] if name != MARK),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    (folder / MARK).write_text(json.dumps(mark, indent=1) + "\n", encoding="utf-8")


def _remove_stale_staging(out: Path, log) -> None:
    """Remove the staging folders (and replaced exports) beside `out` that an export killed
    before it finished left: named as export_run names them, marked, and written by a process
    that is gone (on this host; a mark from another host is taken as gone too)."""
    if not out.parent.is_dir():
        return
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(export|old)-[0-9a-f]{{8}}")
    for path in sorted(out.parent.iterdir()):
        if not pattern.fullmatch(path.name) or path.is_symlink() or not path.is_dir():
            continue
        mark = read_mark(path)
        if mark is None or (mark["host"] == socket.gethostname() and _alive(mark["pid"])):
            continue
        shutil.rmtree(path)
        log(f"removed {path}: left by an export that was stopped before it finished")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _replace(staging: Path, out: Path) -> None:
    """Move the complete export into place; an earlier export is removed only afterwards."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old)


def _listing(folder: Path, *, folders: bool = False) -> list[str]:
    """Relative paths of the files (and, with `folders`, of the folders and links) under
    `folder`, sorted; links are listed, not followed."""
    found = []
    for root, dirs, files in os.walk(folder):
        for name in files + (dirs if folders else []):
            path = Path(root) / name
            if folders or (path.is_file() and not path.is_symlink()):
                found.append(str(path.relative_to(folder)))
    return sorted(found)


def _named(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
