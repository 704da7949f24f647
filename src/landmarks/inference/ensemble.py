"""Model ensembles for `infer`: the members, their cached embeddings, one descriptor per image.

config.ensemble lists the members, e.g. in a preset

    ensemble:
      - {name: b5, model_path: runs/b5/embed_model.keras, image_size: 768, weight: 2}
      - {name: b6, model_path: runs/b6/embed_model.keras, image_size: 640, tta_flip: true}

or `--set 'ensemble=[{model_path: a.keras}, {model_path: b.keras, weight: 2}]'`. Only model_path
is required. name (the cache folder) defaults to the model's run folder when the file is called
embed_model.keras, else to the file's stem; image_size, tta_scales and tta_flip default to the
config's keys; weight to 1. An empty list is one member: config.model_path (or
run_dir/embed_model.keras) with the config's image size and TTA, cached in
run_dir/embeddings/<split>.npz as before; listed members are cached in
run_dir/embeddings/<name>/<split>.npz (see landmarks.inference.cache), so adding a member embeds
only that member. A member's model is loaded only when one of its splits is not cached.

Combination (config.ensemble_mode), with the weights w_i normalised to sum 1 and every member's
embedding e_i L2-normalised:

    concat   v = normalise([sqrt(w_1) e_1, ..., sqrt(w_M) e_M]); the vector before normalising
             already has norm sqrt(sum_i w_i) = 1, so v . v' = sum_i w_i (e_i . e_i'): the
             weighted mean of the members' cosine similarities, found by one kNN over
             D_1 + ... + D_M dimensions. The non-landmark penalty and QE/DBA act on v.
    average  one part per member (landmarks.inference.descriptors): each member searches with
             its own vectors, its own penalty and its own QE/DBA; the candidates are re-scored
             with the same weighted mean.

Choices named here: weights scale the concatenated parts by sqrt(w) (not w), so that both modes
score a pair alike; vectors are kept in config.embed_dtype in memory too (float16 halves the
memory of a GLDv2-size ensemble; a fresh and a cached run then give the same results).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

import numpy as np

from landmarks.config import MAX_IMAGE_SIZE, check_image_size
from landmarks.errors import ConfigError, DataError
from landmarks.inference import cache
from landmarks.inference.descriptors import Descriptors
from landmarks.inference.embedding import Embeddings, NothingEmbedded, embed, scaled_size
from landmarks.inference.fingerprint import (
    attached_train_embeddings,
    embedding_fingerprint,
    file_sha256,
)
from landmarks.inference.model_file import (
    check_embed_model,
    check_model_exists,
    load_embed_model,
)
from landmarks.inference.sources import check_embedded_ids, non_landmark_images, split_images

ENSEMBLE_MODES = ("concat", "average")
MEMBER_KEYS = ("name", "model_path", "image_size", "tta_scales", "tta_flip", "weight")
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
NON_LANDMARK = "non_landmark"  # the penalty's photo set, embedded and cached like a split


@dataclass(frozen=True)
class EnsembleMember:
    """One embedding model of the ensemble. name: its cache folder under run_dir/embeddings
    ("" = that folder itself); image_size: px (each TTA scale embeds at image_size x scale
    rounded to a multiple of 32); weight > 0."""

    name: str
    model_path: str
    image_size: int
    tta_scales: tuple[float, ...]
    tta_flip: bool
    weight: float = 1.0

    def config(self, config):
        """A copy of `config` with this member's model, image size and TTA."""
        from landmarks.config import Config

        copy = Config.from_dict(config.to_dict(), source="ensemble")
        copy.update(
            {
                "model_path": self.model_path,
                "image_size": self.image_size,
                "tta_scales": list(self.tta_scales),
                "tta_flip": self.tta_flip,
            },
            source=f"ensemble member {self.name or 'model'}",
        )
        return copy


def ensemble_members(config) -> list[EnsembleMember]:
    """The members of config.ensemble, checked (ConfigError naming the member and key); one
    unnamed member from the config's own keys when the list is empty."""
    if config.ensemble_mode not in ENSEMBLE_MODES:
        raise ConfigError(
            f"ensemble_mode must be one of {', '.join(ENSEMBLE_MODES)}, got {config.ensemble_mode!r}"
        )
    if not config.ensemble:
        path = config.model_path or os.path.join(config.run_dir, "embed_model.keras")
        return [
            _checked_member(
                "config",
                "",
                path,
                config.image_size,
                config.tta_scales,
                config.tta_flip,
                1.0,
            )
        ]
    members = [_member(config, position, entry) for position, entry in enumerate(config.ensemble)]
    names = [member.name for member in members]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(
            f"ensemble: two members are named {repeated[0]!r} (the name is their cache folder); "
            "give each member its own name"
        )
    return members


def _member(config, position: int, entry) -> EnsembleMember:
    where = f"ensemble[{position}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping such as {{model_path: m.keras}}")
    unknown = sorted(set(entry) - set(MEMBER_KEYS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r} (members take {', '.join(MEMBER_KEYS)})"
        )
    path = entry.get("model_path")
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{where}: model_path (the member's embed_model.keras) is required")
    name = entry.get("name", _default_name(path))
    return _checked_member(
        where,
        name,
        path,
        entry.get("image_size", config.image_size),
        entry.get("tta_scales", config.tta_scales),
        entry.get("tta_flip", config.tta_flip),
        entry.get("weight", 1.0),
    )


def _checked_member(where, name, path, image_size, scales, flip, weight) -> EnsembleMember:
    if name != "" and (not isinstance(name, str) or not NAME_PATTERN.fullmatch(name)):
        raise ConfigError(f"{where}: name must be letters, digits, '_', '.' or '-', got {name!r}")
    check_image_size(image_size, where)
    if (
        not isinstance(scales, (list, tuple))
        or not scales
        or any(
            isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s < math.inf
            for s in scales
        )
    ):
        raise ConfigError(f"{where}: tta_scales must be a list of positive numbers, got {scales!r}")
    largest = scaled_size(image_size, max(scales))
    if largest > MAX_IMAGE_SIZE:
        raise ConfigError(
            f"{where}: image_size {image_size} x tta_scale {max(scales)} is {largest} px, more "
            f"than {MAX_IMAGE_SIZE}"
        )
    if not isinstance(flip, bool):
        raise ConfigError(f"{where}: tta_flip must be true or false, got {flip!r}")
    if (
        isinstance(weight, bool)
        or not isinstance(weight, (int, float))
        or not np.isfinite(weight)
        or weight <= 0
    ):
        raise ConfigError(f"{where}: weight must be a positive number, got {weight!r}")
    return EnsembleMember(
        name, path, image_size, tuple(float(s) for s in scales), flip, float(weight)
    )


def _default_name(model_path: str) -> str:
    """runs/b5/embed_model.keras -> "b5"; models/b6_640.keras -> "b6_640"."""
    stem = os.path.splitext(os.path.basename(model_path.rstrip("/")))[0]
    if stem == "embed_model":
        parent = os.path.basename(os.path.dirname(model_path.rstrip("/")))
        stem = parent or stem
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem)


def concatenate(parts, weights) -> np.ndarray:
    """normalise([sqrt(w_1) p_1, ..., sqrt(w_M) p_M]) with w normalised to sum 1: [N, sum D_i]
    in the dtype of the first part (rows of norm 1, so v . v' = sum_i w_i p_i . p_i')."""
    weights = np.asarray(weights, np.float64)
    weights = weights / weights.sum()
    rows = parts[0].shape[0]
    out = np.empty((rows, sum(part.shape[1] for part in parts)), parts[0].dtype)
    column = 0
    for weight, part in zip(weights, parts, strict=True):
        out[:, column : column + part.shape[1]] = np.sqrt(weight) * part.astype(np.float32)
        column += part.shape[1]
    step = 1 << 16
    for start in range(0, rows, step):  # renormalise in float32, a block of rows at a time
        block = out[start : start + step].astype(np.float32)
        norms = np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
        out[start : start + step] = block / norms
    return out


@dataclass
class EmbeddedSplit:
    """ids: str [N]; labels: int64 [N] or None (train records' labels); descriptors: the
    combined vectors of the N images."""

    ids: np.ndarray
    labels: np.ndarray | None
    descriptors: Descriptors
    unreadable: tuple[str, ...] = ()  # ids whose image file could not be read (left out)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class EnsembleEmbeddings:
    """Each split embedded by every member (or read from its cache) once, combined by
    config.ensemble_mode. `split(name)` for "train", "test", "index" or "non_landmark" (None
    when the penalty has no photo set)."""

    config: object
    log: object = print
    cache_folder: str = ""  # where each member's embeddings are cached; "": run_dir/embeddings
    members: list[EnsembleMember] = field(init=False)
    _splits: dict = field(init=False, default_factory=dict)
    _models: dict = field(init=False, default_factory=dict)
    _digests: dict = field(init=False, default_factory=dict)

    def __post_init__(self):
        self.members = ensemble_members(self.config)
        if self.config.train_embeddings and self.config.ensemble:
            raise ConfigError(
                "train_embeddings holds one exported model's train embeddings; an ensemble's "
                "members cache theirs under run_dir/embeddings/<member>: unset one of the two"
            )

    @property
    def cache_dir(self) -> str:
        return self.cache_folder or os.path.join(self.config.run_dir, "embeddings")

    def split(self, name: str) -> EmbeddedSplit | None:
        if name not in self._splits:
            self._splits[name] = self._combine(name)
        return self._splits[name]

    def _combine(self, split: str) -> EmbeddedSplit | None:
        """Every member's vectors of `split`, each cast to embed_dtype as soon as that member is
        done (so a float16 run never holds more than one member's float32 vectors)."""
        dtype = np.float16 if self.config.embed_dtype == "float16" else np.float32
        first, parts = None, []
        for member in self.members:
            embedded = self.member_split(member, split)
            if embedded is None:
                return None
            if first is None:
                first = embedded
            elif not np.array_equal(embedded.ids, first.ids):
                raise DataError(
                    f"ensemble: member {member.name!r} embedded other {split} images than "
                    f"{self.members[0].name!r} ({len(embedded)} against {len(first)})"
                )
            parts.append(embedded.vectors.astype(dtype, copy=False))
            del embedded
        weights = [member.weight for member in self.members]
        if len(parts) > 1 and self.config.ensemble_mode == "concat":
            descriptors = Descriptors([concatenate(parts, weights)])
        else:
            descriptors = Descriptors(parts, weights)
        return EmbeddedSplit(first.ids, first.labels, descriptors, first.unreadable)

    def member_split(self, member: EnsembleMember, split: str) -> Embeddings | None:
        """`split` embedded by one member: config.train_embeddings (train, when its fingerprint
        matches), else the cache when its fingerprint matches, else embedded now and cached."""
        config = member.config(self.config)
        tag = f"[{member.name}] " if member.name else ""
        if split == "train" and config.train_embeddings:
            attached = attached_train_embeddings(
                config.train_embeddings,
                embedding_fingerprint(self.model_sha256(member), config),
                log=self.log,
            )
            if attached is not None:
                return attached
        if split == NON_LANDMARK:
            images = non_landmark_images(config, log=self.log)
            if images is None:
                return None
        else:
            images = split_images(config, split)
        path = os.path.join(self.cache_dir, member.name, f"{split}.npz")
        expected = cache.fingerprint(self.model_sha256(member), config, images.identity)
        cached = cache.load_cached(path, expected, log=self.log)
        if cached is not None:
            self._note_unreadable(tag, images, cached)
            self.log(f"{tag}{split}: {len(cached)} embeddings from {path}")
            return cached
        from landmarks.data.record_check import naming_bad_records

        self.log(f"{tag}embedding {split} ...")
        self.log(f"{tag}{split}: {images.description}")
        try:
            with naming_bad_records(images.record_files, log=self.log):
                embedded = embed(
                    self._model(member),
                    images.make_dataset,
                    tta_flip=member.tta_flip,
                    scales=member.tta_scales,
                )
        except NothingEmbedded as error:
            raise DataError(
                f"{tag}{split}: no image embedded of {images.description}: each one failed to "
                f"decode or to resize to image_size {member.image_size} x tta_scales "
                f"{list(member.tta_scales)} and was dropped; check those settings and the files"
            ) from error
        self._note_unreadable(tag, images, embedded)
        cache.save_cached(path, expected, embedded, self.config.embed_dtype)
        self.log(f"{tag}embedded {len(embedded)} {split} images")
        return embedded

    def _note_unreadable(self, tag: str, images, embedded: Embeddings) -> None:
        """Check the embedded ids against the source (stale records raise) and keep, and name
        on the console, the images that could not be read."""
        unreadable = check_embedded_ids(images, embedded.ids)
        embedded.unreadable = tuple(unreadable)
        if unreadable:
            named = ", ".join(unreadable[:5]) + (
                f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
            )
            self.log(
                f"{tag}warning: {len(unreadable)} {images.split} image(s) could not be read and "
                f"are left out (their queries get an empty prediction): {named}"
            )

    def model_sha256(self, member: EnsembleMember) -> str:
        """sha256 of the member's model file, read once per run (landmarks.inference.fingerprint)."""
        if member.model_path not in self._digests:
            check_model_exists(member.model_path)
            self._digests[member.model_path] = file_sha256(member.model_path)
        return self._digests[member.model_path]

    def _model(self, member: EnsembleMember):
        """The member's embedding model, loaded and compiled once per file
        (landmarks.inference.forward), checked to take the member's image sizes."""
        sizes = sorted({scaled_size(member.image_size, s) for s in member.tta_scales})
        if member.model_path not in self._models:
            from landmarks.inference.forward import compiled_forward

            model = load_embed_model(member.model_path)
            self._models[member.model_path] = (model, compiled_forward(model))
        model, forward = self._models[member.model_path]
        check_embed_model(model, member.model_path, sizes)
        return forward
