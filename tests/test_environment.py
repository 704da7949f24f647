"""landmarks.kaggle.environment: platform/accelerator detection and attached-dataset paths."""

from __future__ import annotations

import sys
import types

import pytest

from landmarks.errors import DataError
from landmarks.kaggle import environment
from landmarks.kaggle.environment import Environment, detect_environment


@pytest.fixture
def no_devices(monkeypatch):
    """Pretend this machine has no TPU or GPU device files."""
    monkeypatch.setattr(environment.os.path, "exists", lambda path: False)
    monkeypatch.setattr(environment, "tpu_device_files", lambda: ())


@pytest.mark.parametrize(
    "variables, platform, accelerator, working",
    [
        ({}, "local", "cpu", "output"),
        ({"KAGGLE_KERNEL_RUN_TYPE": "Interactive"}, "kaggle", "cpu", "/kaggle/working"),
        (
            {"KAGGLE_KERNEL_RUN_TYPE": "Batch", "TPU_NAME": "local"},
            "kaggle",
            "tpu",
            "/kaggle/working",
        ),
        (
            {"COLAB_RELEASE_TAG": "release-colab_2026", "COLAB_TPU_ADDR": "10.0.0.2:8470"},
            "colab",
            "tpu",
            "/content",
        ),
    ],
)
def test_detect_environment_from_variables(no_devices, variables, platform, accelerator, working):
    assert detect_environment(variables) == Environment(platform, accelerator, working)


@pytest.mark.parametrize(
    "variables, device_files, platform",
    [
        ({"KAGGLE_KERNEL_RUN_TYPE": "Batch", "ISTPUVM": "1"}, (), "kaggle"),  # Kaggle's image
        ({"KAGGLE_KERNEL_RUN_TYPE": "Batch"}, ("/dev/vfio/0", "/dev/vfio/1"), "kaggle"),  # v3-8
        ({"COLAB_RELEASE_TAG": "release-colab_2026"}, ("/dev/accel0",), "colab"),  # v5e-1
        ({"TPU_ACCELERATOR_TYPE": "v6e-8"}, (), "local"),  # a Cloud TPU VM
    ],
)
def test_a_tpu_vm_is_detected_from_its_variables_or_chips(
    no_devices, variables, device_files, platform
):
    found = detect_environment(variables, device_files)
    assert (found.platform, found.accelerator, found.tpu_vm) == (platform, "tpu", True)
    assert "(tpu VM)" in str(found)


def test_a_kaggle_tpu_vm_reads_attached_datasets_from_their_mounted_files(monkeypatch):
    """Kaggle's TPU VM mounts the datasets: no gs:// detour even where KaggleDatasets knows one."""
    _fake_kaggle_datasets(monkeypatch, {"gldv2-tfrecords": "gs://kds-abc123"})
    mounted = "/kaggle/input/gldv2-tfrecords/train"
    monkeypatch.setattr(environment.os.path, "exists", lambda path: path == mounted)
    tpu_vm = detect_environment({"KAGGLE_KERNEL_RUN_TYPE": "Batch", "ISTPUVM": "1"}, ())
    assert tpu_vm.input_path(mounted) == mounted
    node = Environment("kaggle", "tpu", "/kaggle/working", tpu_vm=False)
    assert node.input_path(mounted) == "gs://kds-abc123/train"


def test_gpu_is_detected_from_the_nvidia_device_unless_hidden(monkeypatch):
    monkeypatch.setattr(environment.os.path, "exists", lambda path: path == "/dev/nvidia0")
    monkeypatch.setattr(environment, "tpu_device_files", lambda: ())
    assert detect_environment({"KAGGLE_KERNEL_RUN_TYPE": "Batch"}).accelerator == "gpu"
    assert detect_environment({"CUDA_VISIBLE_DEVICES": ""}).accelerator == "cpu"


def test_input_path_keeps_existing_local_and_remote_paths(tmp_path):
    local = Environment("local", "cpu", "output")
    assert local.input_path(str(tmp_path)) == str(tmp_path)
    assert local.input_path("gs://bucket/records") == "gs://bucket/records"
    with pytest.raises(DataError, match="/kaggle/input/absent: not found on this local machine"):
        local.input_path("/kaggle/input/absent")


def _fake_kaggle_datasets(monkeypatch, buckets):
    module = types.ModuleType("kaggle_datasets")

    class KaggleDatasets:
        def get_gcs_path(self, name):
            if name not in buckets:
                raise ValueError(f"unknown dataset {name}")
            return buckets[name]

    module.KaggleDatasets = KaggleDatasets
    module.__spec__ = types.SimpleNamespace(name="kaggle_datasets")
    monkeypatch.setitem(sys.modules, "kaggle_datasets", module)


def test_kaggle_tpu_node_reads_attached_datasets_from_gcs(monkeypatch, tmp_path):
    _fake_kaggle_datasets(monkeypatch, {"gldv2-tfrecords": "gs://kds-abc123"})
    tpu = Environment("kaggle", "tpu", "/kaggle/working")
    assert tpu.input_path("/kaggle/input/gldv2-tfrecords") == "gs://kds-abc123"
    assert tpu.input_path("/kaggle/input/gldv2-tfrecords/train") == "gs://kds-abc123/train"
    # A dataset KaggleDatasets does not know falls back to the local path, which must exist.
    with pytest.raises(DataError, match="other: not found on this kaggle machine"):
        tpu.input_path("/kaggle/input/other")
    # The GCS lookup is for the TPU only: a Kaggle GPU reads the mounted folder.
    gpu = Environment("kaggle", "gpu", "/kaggle/working")
    with pytest.raises(DataError):
        gpu.input_path("/kaggle/input/gldv2-tfrecords")
    assert tpu.input_path(str(tmp_path)) == str(tmp_path)
