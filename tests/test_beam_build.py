"""`prepare --engine beam` (issue 22): the local build's shards, label map and manifest counts,
written by Apache Beam with the network cut; a rerun rewrites nothing; `--num-tasks` mixes
engines; the runner pin and the one-line errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from records_helpers import make_gldv2, picture, png_bytes, read_records, train_image

import landmarks.data
from landmarks.data import tfrecords
from landmarks.errors import ConfigError

CLASSES = {101: 9, 7: 6, 55: 5, 3: 2}  # landmark_id: images (22 in all)
BUILD = {"num_shards": 3, "holdout": 0.25, "seed": 5}
BUILD_ARGS = ["--shards", "3", "--holdout", "0.25", "--seed", "5", "--quiet"]
OFFLINE_DIRECT = [
    "--runner=DirectRunner",
    "--direct_num_workers=2",
    "--direct_running_mode=multi_processing",
]


@pytest.fixture(scope="module")
def gldv2_dir(tmp_path_factory):
    """22 images: one empty (skipped), one PNG under a .jpg name (re-encoded), 20 copied."""
    root = tmp_path_factory.mktemp("gldv2")
    rows = make_gldv2(root, CLASSES, size=(48, 32))
    ids = sorted(rows)
    train_image(root, ids[3]).write_bytes(b"")
    train_image(root, ids[8]).write_bytes(png_bytes(picture(40, 30, seed=9)))
    return root


def _local(root, out, **options) -> dict:
    return tfrecords.prepare(str(root), "train", str(out), progress=False, **BUILD, **options)


def _shards(out) -> dict[str, list[tuple]]:
    """{shard file: [(id, label, landmark_id, height, width, image bytes), ...] in file order}."""
    return {
        path.name: [
            tuple(r[k] for k in ("id", "label", "landmark_id", "height", "width", "encoded"))
            for r in read_records([path])
        ]  # fmt: skip
        for path in sorted(out.glob("*.tfrec"))
    }


def _without_run(manifest: dict) -> dict:
    """The manifest less how the build ran (workers, or engine and runner; tasks)."""
    builds = {
        name: dict(build, options={k: v for k, v in build["options"].items()
                                   if k not in ("workers", "engine", "runner", "num_tasks")})
        for name, build in manifest["builds"].items()
    }  # fmt: skip
    return dict(manifest, builds=builds)


def _assert_same_build(beam_out, local_out) -> None:
    beam_manifest = tfrecords.read_manifest(str(beam_out))
    local_manifest = tfrecords.read_manifest(str(local_out))
    assert _shards(beam_out) == _shards(local_out)
    assert (beam_out / "label_map.csv").read_text() == (local_out / "label_map.csv").read_text()
    assert _without_run(beam_manifest) == _without_run(local_manifest)


def _stamps(out) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every shard and receipt: a rewritten file changes both or one."""
    files = list(out.glob("*.tfrec")) + list((out / "_build").glob("*.tfrec.json"))
    return {str(p.relative_to(out)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}


def _offline_prefix() -> list[str]:
    """`unshare --net` with only the loopback interface up (Beam's local workers talk gRPC on
    localhost); skips when this system does not allow a network namespace."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2) to cut the network")
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare --net not permitted here: {probe.stderr.strip()}")
    # exit 97 unless the namespace holds the loopback interface alone
    script = 'ip link set lo up && [ "$(ip -o link | wc -l)" = 1 ] || exit 97; exec "$@"'
    return ["unshare", "--net", "sh", "-c", script, "sh"]


@pytest.mark.slow
def test_beam_build_offline_matches_local_and_a_rerun_rewrites_nothing(gldv2_dir, tmp_path):
    local = _local(gldv2_dir, tmp_path / "local")
    build = local["builds"]["train"]
    assert (build["copied"], build["reencoded"], build["num_skipped"]) == (20, 1, 1)
    beam_out = tmp_path / "beam"
    command = _offline_prefix() + [
        sys.executable, "-m", "landmarks", "prepare", "--data-dir", str(gldv2_dir),
        "--split", "train", "--out", str(beam_out), *BUILD_ARGS, "--engine", "beam", "--",
        *OFFLINE_DIRECT,
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "runner FnApiRunner" in first.stdout
    assert "skipped (empty file (0 bytes)): 1" in first.stdout
    _assert_same_build(beam_out, tmp_path / "local")
    manifest = tfrecords.read_manifest(str(beam_out))
    assert manifest["builds"]["train"]["options"]["engine"] == "beam"
    assert [s["id"] for s in manifest["builds"]["train"]["skipped"]] == [
        s["id"] for s in build["skipped"]
    ]
    assert not list(beam_out.rglob("*.incomplete"))

    stamps = _stamps(beam_out)
    assert len(stamps) == 8  # 3 train + 1 holdout shards, each with its receipt
    # the rerun on one in-process worker: no worker processes to start (cheaper), same DoFns
    command = command[: -len(OFFLINE_DIRECT)] + ["--runner=DirectRunner"]
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _stamps(beam_out) == stamps
    _assert_same_build(beam_out, tmp_path / "local")


def test_tasks_split_over_both_engines_make_the_local_build(gldv2_dir, tmp_path):
    """Task 0 of 2 on Beam (in this process), task 1 of 2 locally: one build, equal to the
    local build in one task; the task on Beam writes only its own shards."""
    _local(gldv2_dir, tmp_path / "single")
    split = tmp_path / "split"
    first = _local(gldv2_dir, split, num_tasks=2, task_index=0, engine="beam")
    assert first["complete"] is False
    assert sorted(p.name for p in split.glob("*.tfrec")) == [
        "train-00000-of-00003.tfrec",
        "train-00002-of-00003.tfrec",
    ]
    _local(gldv2_dir, split, num_tasks=2, task_index=1)
    _assert_same_build(split, tmp_path / "single")


def test_direct_runner_is_pinned_to_the_python_engine():
    from apache_beam.options.pipeline_options import StandardOptions

    from landmarks.data.beam_build import pipeline_options

    def runner(args):
        return pipeline_options(args).view_as(StandardOptions).runner

    assert runner([]) == "FnApiRunner"
    assert runner(["--runner=DirectRunner", "--direct_num_workers=2"]) == "FnApiRunner"
    assert runner(["--runner", "direct"]) == "FnApiRunner"
    assert runner(["--runner=DataflowRunner"]) == "DataflowRunner"
    assert runner(["--runner=PrismRunner"]) == "PrismRunner"


def test_pipeline_options_need_the_beam_engine_and_a_known_runner(gldv2_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"--runner=FnApiRunner\) need --engine beam"):
        _local(gldv2_dir, tmp_path, pipeline_args=("--runner=FnApiRunner",))
    with pytest.raises(ConfigError, match=r"after `--`: Unexpected pipeline runner: Nope\."):
        _local(gldv2_dir, tmp_path, engine="beam", pipeline_args=("--runner=Nope",))
    assert not list(tmp_path.rglob("*.tfrec")) and not list(tmp_path.rglob("*.jsonl"))


def test_cli_passes_what_follows_the_double_dash_to_beam(gldv2_dir, tmp_path, capsys):
    from landmarks.cli import main

    args = ["prepare", "--data-dir", str(gldv2_dir), "--split", "train", "--out", str(tmp_path)]
    assert main([*args, "--", "--runner=DataflowRunner"]) == 2
    error = capsys.readouterr().err
    assert (
        error == "error: pipeline options after `--` (--runner=DataflowRunner) need --engine beam\n"
    )
    assert main([*args, "--engine", "beam", "--", "--runner=Nope", "--project=P"]) == 2
    assert "Unexpected pipeline runner: Nope" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.tfrec"))


def test_missing_apache_beam_is_a_one_line_error(gldv2_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "apache_beam", None)  # `import apache_beam` fails
    monkeypatch.delitem(sys.modules, "landmarks.data.beam_build", raising=False)
    monkeypatch.delattr(landmarks.data, "beam_build", raising=False)
    with pytest.raises(ConfigError, match=r"pip install apache-beam==2\.77\.0"):
        _local(gldv2_dir, tmp_path, engine="beam")
    assert not list(tmp_path.glob("*.tfrec"))
