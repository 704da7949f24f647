"""Write PyTorch-format state dicts without torch, for the tests of the restricted reader.

`torch.save` pickles each tensor as `torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, requires_grad, backward_hooks)` with the storage as a persistent id
('storage', torch.<Type>Storage, key, location, numel[, view_metadata]). Here stand-in modules
named `torch` and `torch._utils` sit in sys.modules only while pickling, so the standard
Pickler writes exactly those globals; the storages follow in the legacy layout (int64 element
count + bytes) or as zip members (`archive/data/<key>`).
"""

from __future__ import annotations

import collections
import contextlib
import io
import pickle
import struct
import sys
import types
import zipfile

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_NAMES = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.int64): "LongStorage",
}


class Storage:
    """A flat numpy buffer standing for one torch storage."""

    def __init__(self, key: str, data: np.ndarray):
        self.key = key
        self.data = np.ascontiguousarray(data).reshape(-1)


class Tensor:
    """A view (offset, size, stride in elements) into a Storage, pickled as torch pickles it."""

    rebuild = None  # set inside fake_torch()

    def __init__(self, storage: Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        args = (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict())
        return (Tensor.rebuild, args)


def tensor(array: np.ndarray, key: str) -> Tensor:
    """A contiguous tensor with its own storage."""
    array = np.asarray(array)
    strides = tuple(s // array.itemsize for s in array.strides)
    return Tensor(Storage(key, array), 0, array.shape, strides)


@contextlib.contextmanager
def fake_torch():
    """Stand-in `torch` / `torch._utils` modules in sys.modules (restored afterwards)."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only pickled, never called")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    for name in STORAGE_NAMES.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    Tensor.rebuild = _rebuild_tensor_v2
    try:
        yield torch
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _pickle_state(state, legacy: bool) -> tuple[bytes, list[Storage]]:
    storages: dict[str, Storage] = {}
    buffer = io.BytesIO()
    with fake_torch() as torch:

        class Pickler(pickle.Pickler):
            def persistent_id(self, obj):
                if not isinstance(obj, Storage):
                    return None
                storages.setdefault(obj.key, obj)
                storage_type = getattr(torch, STORAGE_NAMES[obj.data.dtype])
                pid = ("storage", storage_type, obj.key, "cpu", obj.data.size)
                return pid + (None,) if legacy else pid

        Pickler(buffer, protocol=2).dump(state)
    return buffer.getvalue(), list(storages.values())


def write_legacy(path, state: dict) -> None:
    """A legacy (torch < 1.6) file: magic, protocol, system info, dict, keys, storages."""
    data, storages = _pickle_state(collections.OrderedDict(state), legacy=True)
    with open(path, "wb") as handle:
        for header in (
            LEGACY_MAGIC,
            1001,
            {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}},
        ):
            pickle.dump(header, handle, protocol=2)
        handle.write(data)
        pickle.dump([s.key for s in storages], handle, protocol=2)
        for storage in storages:
            handle.write(struct.pack("<q", storage.data.size))
            handle.write(storage.data.astype(storage.data.dtype.newbyteorder("<")).tobytes())


def write_zip(path, state: dict) -> None:
    """A zip-format (torch >= 1.6) file: archive/data.pkl, archive/data/<key>, byteorder."""
    data, storages = _pickle_state(collections.OrderedDict(state), legacy=False)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
        for storage in storages:
            archive.writestr(f"archive/data/{storage.key}", storage.data.tobytes())
