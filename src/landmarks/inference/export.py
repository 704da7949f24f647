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

The folder is written under a temporary name beside `out_dir` and renamed when complete; an
existing `out_dir` is replaced only when it is empty or an earlier export.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from landmarks.config import Config
from landmarks.errors import ConfigError, DataError

MODELS = {"last": "embed_model.keras", "best": "best_embed_model.keras"}
EXPORTED = ("embed_model.keras", "config.yaml", "label_map.csv", "embeddings")
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

    from landmarks.io_utils import read_text

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
    from landmarks.data.tfrecords import LABEL_MAP, read_label_map

    config = Config.load(config_path)
    config.records_dir = records_dir or config.records_dir
    read_label_map(config.records_dir)  # checked before anything is written
    out = Path(out_dir)
    _check_target(out)
    staging = out.parent / f".{out.name}.export-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        tf.io.gfile.copy(model_path, str(staging / "embed_model.keras"))
        label_map = read_text(os.path.join(config.records_dir, LABEL_MAP))
        (staging / LABEL_MAP).write_text(label_map, encoding="utf-8")
        exported = Config.from_dict(config.to_dict(), source=config_path)
        exported.update({key: "" for key in CLEARED_KEYS}, source="export")
        exported.save(str(staging / "config.yaml"))
        if train_embeddings:
            _export_train_embeddings(config, staging, log)
        _replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    log(f"exported {MODELS[model]} of {run_dir} to {out}: {', '.join(_listing(out))}")
    return out


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
    """`out` may be absent, empty, or an earlier export; anything else is refused."""
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError(f"export --out {out}: a file is in the way")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in EXPORTED + PUBLISHING)
    if foreign:
        raise DataError(
            f"export --out {out}: the folder holds other files ({', '.join(foreign[:3])}); "
            "export into an empty folder or an earlier export"
        )


def _replace(staging: Path, out: Path) -> None:
    """Move the complete export into place; an earlier export is removed only afterwards."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old)


def _listing(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
