"""The one reader of embedding model files (`model_path`, ensemble members): .keras or legacy .h5.

`load_embed_model(path, image_sizes)` returns the Keras model, or raises a ConfigError naming
the file for everything a file from elsewhere can be:

    missing, a folder, not a Keras file, cut off          (before Keras reads it)
    a .keras whose config.json or metadata.json declares  (refused by the zip entry's declared
    more than MAX_CONFIG_BYTES (a zip bomb)                size, before anything is inflated)
    a config naming objects that are not Keras or         (Keras' safe mode runs none of them;
    landmarks ones (`os.system`, `builtins.eval`, an        the error names them)
    unregistered function or layer)
    an input fixed to another size than the run's         (names both sizes)
    image_size (at each TTA scale), or not [B, H, W, 3]
    an output that is not one vector per image [B, D]

Keras 3 reads a .keras archive with zipfile and refuses a bomb member only above 4 GiB; a
config.json is a few MB even for the largest backbone, so the limit here is far lower.
"""

from __future__ import annotations

import json
import zipfile
import zlib

from landmarks.errors import ConfigError

MAX_CONFIG_BYTES = 64 << 20  # 64 MiB: declared size allowed for config.json / metadata.json
CONFIG_MEMBERS = ("config.json", "metadata.json")
OUR_MODULES = ("keras", "landmarks")  # modules whose objects a saved embedding model names
# What keras.saving.load_model raises for a file it cannot rebuild (TypeError: an object it
# will not deserialise, e.g. os.system under safe mode)
LOAD_ERRORS = (
    ValueError,
    OSError,
    KeyError,
    TypeError,
    AttributeError,
    ImportError,
    zipfile.BadZipFile,
)


def load_embed_model(path: str, image_sizes=()):
    """The saved embedding model at `path` (local or gs://), checked to take images of every
    size in `image_sizes` (pixels, square) and to give one vector per image; see the module
    docstring for the ConfigErrors."""
    import keras

    import landmarks.models  # noqa: F401  (registers the custom layers for deserialisation)

    check_model_exists(path)
    config = _read_config(path)
    try:
        model = keras.saving.load_model(path, compile=False)
    except LOAD_ERRORS as error:
        foreign = _foreign_objects(config)
        if foreign:
            raise ConfigError(
                f"model_path {path}: its config names objects outside Keras and landmarks: "
                f"{', '.join(foreign[:3])} (unregistered functions or classes, or a hostile "
                "file); none of them was run"
            ) from error
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"model_path {path}: cannot be loaded as a Keras model (damaged?): {first[:300]}"
        ) from error
    check_embed_model(model, path, image_sizes)
    return model


def check_model_exists(path: str) -> None:
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        raise ConfigError(f"embed model not found: {path} (set model_path or train first)")
    if tf.io.gfile.isdir(path):
        raise ConfigError(f"model_path {path}: is a folder; give its embed_model.keras file")


def _read_config(path: str):
    """The model's config (a JSON value, or None when it cannot be read here): from a .keras
    archive's config.json once its declared size is checked, or a legacy .h5's model_config."""
    import tensorflow as tf

    opener = tf.io.gfile.GFile if "://" in path else open
    with opener(path, "rb") as handle:
        head = handle.read(8)
        handle.seek(0)
        try:
            is_archive = zipfile.is_zipfile(handle)
        except tf.errors.OpError:  # GFile refuses to seek before the start of a tiny file
            is_archive = False
        if is_archive:
            return _archive_config(handle, path)
    if not head.startswith(b"\x89HDF"):  # .keras is a zip; legacy .h5 is HDF5
        damaged = " (it starts like one: truncated?)" if head.startswith(b"PK") else ""
        raise ConfigError(
            f"model_path {path}: not a Keras model file{damaged}; expected a .keras archive "
            "such as the embed_model.keras that `train` writes"
        )
    return _h5_config(path)


def _archive_config(handle, path: str):
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, OSError, ValueError):
        return None  # Keras names what is wrong in its own error
    with archive:
        for info in archive.infolist():
            if info.filename in CONFIG_MEMBERS and info.file_size > MAX_CONFIG_BYTES:
                raise ConfigError(
                    f"model_path {path}: its {info.filename} would inflate to "
                    f"{info.file_size:,} bytes (over {MAX_CONFIG_BYTES:,}; "
                    f"{info.compress_size:,} stored): not a model this pipeline wrote, "
                    "refused before reading"
                )
        try:
            return json.loads(archive.read("config.json"))
        except (KeyError, ValueError, zipfile.BadZipFile, EOFError, OSError, zlib.error):
            return None


def _h5_config(path: str):
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            return json.loads(handle.attrs["model_config"])
    except (KeyError, ValueError, OSError, TypeError):
        return None


def _foreign_objects(config) -> list[str]:
    """ "module.name" of every object the config names outside OUR_MODULES (functions are
    serialised as {"module", "class_name": "function", "config": name}), in order, once each."""
    found: list[str] = []

    def visit(value) -> None:
        if isinstance(value, dict):
            module, name = value.get("module"), value.get("class_name")
            if isinstance(module, str) and isinstance(name, str):
                if name == "function" and isinstance(value.get("config"), str):
                    name = value["config"]
                if module.split(".")[0] not in OUR_MODULES and f"{module}.{name}" not in found:
                    found.append(f"{module}.{name}")
            for item in value.values():
                visit(item)
        elif isinstance(value, list):
            for item in value:
                visit(item)

    visit(config)
    return found


def check_embed_model(model, path: str, image_sizes=()) -> None:
    """ConfigError naming the file unless the model takes [B, H, W, 3] images of each of
    `image_sizes` (H, W None or equal) and gives [B, D] vectors."""
    inputs, outputs = model.inputs, model.outputs
    shape = tuple(inputs[0].shape) if len(inputs) == 1 else None
    if shape is None or len(shape) != 4 or shape[3] not in (None, 3):
        raise ConfigError(
            f"model_path {path}: takes {_shapes(inputs)}, not one batch of RGB images "
            "[B, H, W, 3]; is it an embedding model?"
        )
    fixed = [size for size in image_sizes if {shape[1], shape[2]} - {None, size}]
    if fixed:
        raise ConfigError(
            f"model_path {path}: its input is fixed to {shape[1]}x{shape[2]} pixels, but this "
            f"run embeds at {', '.join(f'{s}x{s}' for s in fixed)} (image_size and tta_scales); "
            f"set image_size: {shape[1]} or use a model built for that size"
        )
    if len(outputs) != 1 or len(outputs[0].shape) != 2:
        raise ConfigError(
            f"model_path {path}: gives {_shapes(outputs)}, not one embedding per image [B, D]; "
            "give the embedding model (embed_model.keras), not a feature map or training model"
        )


def _shapes(tensors) -> str:
    return " and ".join(str(list(t.shape)).replace("None", "B", 1) for t in tensors)
