"""One `Config` dataclass holding every knob of a run, with YAML/JSON load and save.

Presets in configs/*.yaml name only the keys they change; everything else comes from the
defaults below. `--set key=value` overrides are parsed as YAML scalars/lists
(`--set image_size=512`, `--set tta_scales=[0.7071,1,1.4142]`). A float key takes anything
Python's float() reads (`1e-3`, which YAML 1.1 reads as text), and only finite values; a file or
override that expands to more than MAX_VALUES values (nested YAML aliases) is refused before it
is used.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import typing
from dataclasses import dataclass, field

from landmarks.errors import ConfigError

MAX_VALUES = 100_000  # values (mappings, lists and scalars, aliases expanded) in one config
MAX_IMAGE_SIZE = 4096  # px: the largest image_size (of the run, of an ensemble member, x TTA)


@dataclass
class Config:
    """Every setting of the pipeline. Units are given per field; sizes are pixels."""

    # --- run ------------------------------------------------------------------------------
    run_name: str = "run"  # run folder is output_dir/run_name
    output_dir: str = "output"  # local path or gs://
    seed: int = 42

    # --- data -----------------------------------------------------------------------------
    data_dir: str = "input/mini-landmarks"  # GLDv2-layout folder (train.csv, train/, test/, index/)
    records_dir: str = "output/tfrecords"  # folder of <split>-SSSSS-of-NNNNN.tfrec + manifest.json
    train_split: str = "train"  # shard prefix of the training records
    holdout_split: str = "holdout"  # shard prefix of the validation records ("" = none)
    image_size: int = 256  # square training/embedding input, a multiple of 32
    batch_size: int = 32  # PER REPLICA; global batch = batch_size * replicas
    augment: str = "tf"  # "tf" (in-graph, TPU-safe), "albumentations" (CPU/GPU only) or "none"
    crop_area_min: float = 0.25  # smallest fraction of the image area the random crop keeps (up to 1); small values teach close-up views of a landmark
    shuffle_buffer: int = 2048  # examples

    # --- model ----------------------------------------------------------------------------
    backbone: str = "efficientnet_b0"  # see landmarks.models.BACKBONES
    weights: str | None = None  # None, "imagenet", "noisy-student" or a weights file path
    head: str = "dolg"  # "dolg", "gem" (global-only ablation) or "fbsd"; see models.HEADS
    embedding_dim: int = 512
    local_dim: int = 512  # channels of the DOLG local branch (and of the fused global vector)
    dilations: list[int] = field(default_factory=lambda: [6, 12, 18])  # MultiAtrous rates
    gem_p: float = 3.0  # initial GeM exponent (trainable)
    dropout: float = 0.0  # before the embedding neck
    freeze_batchnorm: bool = False  # backbone BatchNorms in inference mode, statistics/scale fixed
    batchnorm_momentum: float | None = (
        None  # every BatchNorm's moving-average momentum (None: 0.99)
    )
    num_classes: int = 0  # 0 = read from the label map beside the records
    arcface_k: int = 3  # sub-centres per class
    arcface_scale: float = 30.0
    arcface_margin: float = 0.3  # used when dynamic_margins is false
    dynamic_margins: bool = True  # per-class margins from class counts (2021 winner)
    margin_low: float = 0.05
    margin_high: float = 0.5
    fbsd_mid_dim: int = 512  # head fbsd: 1x1 reduction channels per stage (paper: 512)
    fbsd_part_dim: int = 1024  # head fbsd: part-map channels per stage (paper: 1024)
    fbsd_alpha: float = 0.5  # head fbsd: FBSM boosting strength
    fbsd_beta: float = 0.5  # head fbsd: FBSM factor on the suppressed best strip
    fbsd_gamma: float = 1.0  # head fbsd: weight of the FDM-exchanged part features

    # --- training -------------------------------------------------------------------------
    epochs: int = 10
    steps_per_epoch: int = 0  # 0 = one pass over the records (a multiple of steps_per_execution)
    global_batch_size: int = 0  # examples per step over all replicas; 0 = batch_size x replicas, else must divide by the replica count (and sets the per-replica batch)
    stop_after_epochs: int = 0  # end the run after this many epochs while the schedule spans `epochs` (0 = run all; the 2021 winner's `stop_at`)
    resume_from: str = ""  # a run folder to continue, e.g. the previous Kaggle session's, attached read-only: copied into run_dir when that holds no checkpoints yet (landmarks.training.resume_from)
    init_from: str = ""  # staged training: run folder (or checkpoint prefix) whose model weights start this run; optimizer and schedule start afresh
    optimizer: str = "adamw"  # "adamw" or "sgd" (momentum 0.9)
    learning_rate: float = 1e-3  # peak learning rate of the head (after warmup)
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    min_learning_rate: float = 1e-6  # floor of the cosine decay
    backbone_lr_multiplier: float = 0.1  # backbone learning rate = learning_rate * this
    clip_norm: float = 10.0  # global gradient-norm clip (0 = off)
    label_smoothing: float = 0.0
    precision: str = "auto"  # "auto" (TPU bf16, GPU fp16, CPU fp32), "float32", "mixed_float16", "mixed_bfloat16"
    jit_compile: str = "auto"  # "auto" (on for TPU only), "true", "false"
    steps_per_execution: int = 1
    validate_every: int = 1  # epochs between validation GAP runs (0 = never)
    validation_queries: int = 2000  # at most this many holdout images per validation
    validation_index: int = 20000  # at most this many train images as the kNN index

    # --- inference ------------------------------------------------------------------------
    model_path: str = ""  # embed_model.keras; "" = output_dir/run_name/embed_model.keras
    train_embeddings: str = ""  # exported train embeddings (.npz of `export --train-embeddings`): used instead of embedding the train records when their fingerprint matches the model and image_size/tta settings
    image_source: str = "folder"  # test/index images: "folder" (data_dir/<split>, where Kaggle puts the hidden test set) or "records" (<split>-*.tfrec, checked against the folder)
    knn_backend: str = "auto"  # "auto" (GPU/TPU: jax on the JAX backend, else tf; CPU: tf with native bf16, else faiss), "tf", "jax" (chunked matmul + top_k), "numpy", "faiss", "faiss-ivf", "faiss-hnsw"
    knn_k: int = 10  # neighbours for recognition voting
    tta_flip: bool = False
    tta_scales: list[float] = field(default_factory=lambda: [1.0])
    embed_dtype: str = "float32"  # or "float16" for saved embeddings
    non_landmark_penalty: bool = True  # 2020/2021 winners' non-landmark penalty
    non_landmark_top_n: int = 5
    non_landmark_dir: str = (
        ""  # folder of .jpg photos without landmarks (penalty set); "" = no penalty
    )
    recognition_threshold: float | None = (
        None  # confidence below it -> empty prediction; None = off
    )
    query_expansion_alpha: float = 0.0  # 0 = off; alpha-QE / DBA exponent
    query_expansion_k: int = 2
    label_rerank: bool = False  # older spelling of retrieval_rerank: label
    # retrieval re-ranking through the train labels (landmarks.inference.soft_rerank, bridged):
    # "none"; "label" (hard: index images of the query's landmark first, Yokoo et al. 2019);
    # "soft" (2021 winner: similarity + bonus x score on a match, - penalty x score otherwise);
    # "bridged" (2021 5th place: query -> landmark -> index distances with the direct ones)
    retrieval_rerank: str = "none"
    rerank_candidates: int = 750  # direct top-K index images per query that soft/bridged re-rank
    soft_rerank_bonus: float = 1.0  # x the candidate's landmark score when it matches the query's
    soft_rerank_penalty: float = 0.1  # x the candidate's landmark score when it does not
    bridged_train_k: int = 300  # train neighbours per test/index image for its landmark distances
    bridged_landmark_k: int = 2  # d(image, landmark) = mean distance to its k nearest of them
    bridged_landmarks: int = 5  # nearest landmarks kept per test/index image
    bridged_bonus: float = 0.5  # subtracted from the distance to each image's nearest landmark
    bridged_power: float = 3.0  # final score = mean of direct^p and bridged^p confidences
    bridged_confidence: str = (
        "one_minus"  # distance -> confidence: "one_minus" (1 - d) or "inverse" (1/d)
    )
    # --- ensembles (landmarks.inference.ensemble) -------------------------------------------
    # members: [{name, model_path, image_size, tta_scales, tta_flip, weight}], each key but
    # model_path optional (defaults: the keys above, weight 1); [] = the single model_path
    ensemble: list[dict] = field(default_factory=list)
    ensemble_mode: str = "concat"  # "concat" (weighted concatenation, one kNN) or "average" (weighted mean of each member's similarities)
    backbone_gem_weight: float = 0.0  # the demo: weight in [0, 1) of the backbone's own pretrained GeM features concatenated to the trained embedding for kNN (an ensemble member, see ensemble_mode concat; 0 = the trained model alone); elsewhere list its saved model as an `ensemble` member

    # --- I/O --------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, values: dict, source: str = "dict") -> Config:
        """Build a Config from `values`, naming `source` and the key in any error."""
        config = cls()
        config.update(values, source=source)
        return config

    @classmethod
    def load(cls, path: str, overrides: typing.Sequence[str] = ()) -> Config:
        """Read a YAML or JSON file, then apply `key=value` overrides."""
        import yaml

        from landmarks.io_utils import read_text

        try:
            text = read_text(path)
        except FileNotFoundError as error:
            raise ConfigError(f"config file not found: {path}") from error
        try:
            values = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML: {error}") from error
        if not isinstance(values, dict):
            raise ConfigError(
                f"{path}: expected a mapping of key: value, got {type(values).__name__}"
            )
        check_expanded_size(values, path)
        config = cls.from_dict(values, source=path)
        config.apply_overrides(overrides)
        return config

    def apply_overrides(self, overrides: typing.Sequence[str]) -> None:
        """Apply `key=value` strings; values are parsed as YAML (`true`, `3`, `[1, 2]`, `null`)."""
        import yaml

        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"--set {item!r}: expected key=value")
            key, raw = item.split("=", 1)
            try:
                value = yaml.safe_load(raw) if raw != "" else ""
            except yaml.YAMLError as error:
                raise ConfigError(f"--set {item!r}: value is not valid YAML: {error}") from error
            check_expanded_size(value, f"--set {key.strip()}")
            self.update({key.strip(): value}, source="--set")

    def update(self, values: dict, source: str = "dict") -> None:
        """Set each key after checking that it exists and that its value has the right type."""
        hints = typing.get_type_hints(type(self))
        known = {f.name for f in dataclasses.fields(self)}
        for key, value in values.items():
            if key not in known:
                close = difflib.get_close_matches(str(key), sorted(known), n=3, cutoff=0.7)
                close += [k for k in sorted(known) if k.split("_")[0] == str(key).split("_")[0]]
                close = list(dict.fromkeys(close))[:5]
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise ConfigError(f"{source}: unknown config key {key!r}{hint}")
            setattr(self, key, _coerce(value, hints[key], f"{source}: {key}"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str) -> None:
        """Write YAML (or JSON when `path` ends in .json), atomically."""
        import yaml

        from landmarks.io_utils import write_text_atomic

        if path.endswith(".json"):
            text = json.dumps(self.to_dict(), indent=2) + "\n"
        else:
            text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        write_text_atomic(path, text)

    @property
    def run_dir(self) -> str:
        """output_dir/run_name: checkpoints, embed_model.keras, config.yaml, history.csv."""
        return os.path.join(self.output_dir, self.run_name)


def check_expanded_size(value, source: str, limit: int = MAX_VALUES) -> None:
    """ConfigError naming `source` when `value` (parsed YAML) holds more than `limit` values
    once its aliases are expanded (a "billion laughs" file of a few hundred bytes, or an alias
    that contains itself), which copying the config would otherwise expand in memory. Stops
    counting at the limit, so the check costs at most `limit` steps."""
    pending, seen = [value], 0
    while pending:
        item = pending.pop()
        seen += 1
        if seen > limit:
            raise ConfigError(
                f"{source}: expands to more than {limit} values (nested YAML aliases?); "
                "write the values out instead"
            )
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)


def check_image_size(size, where: str) -> None:
    """ConfigError naming `where` unless `size` (px) is an integer from 32 to MAX_IMAGE_SIZE."""
    if isinstance(size, bool) or not isinstance(size, int) or not 32 <= size <= MAX_IMAGE_SIZE:
        raise ConfigError(
            f"{where}: image_size must be an integer from 32 to {MAX_IMAGE_SIZE} px, got {size!r}"
        )


def _coerce(value, hint, where: str):
    """Check `value` against the type `hint` of a field; ints are accepted for floats."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or type(hint).__name__ == "UnionType":
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        number = _float(value)
        if number is None:
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of key: value, got {value!r}")
        return dict(value)
    return value


def _float(value) -> float | None:
    """`value` as a float: a number, or text Python's float() reads ("1e-3"); None otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return float(value)
    except OverflowError:  # an integer beyond the float range
        return math.inf
    except ValueError:
        return None
