"""Damaged, hostile or misplaced files, and folders a command must not destroy (issue 20: D3, D4,
D5 and the file tracebacks): one line `error: ...` naming the file, exit status 2, nothing of the
user's lost. Training's bad inputs (divergence, checkpoints, resume) are in
test_bad_inputs_training.py; the earlier rounds in test_bad_inputs.py and
test_records_bad_inputs.py. All use the mini-landmarks fixtures of conftest.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from landmarks.cli import main
from landmarks.data.record_parts import join_record_parts
from landmarks.data.tfrecords import read_label_map
from landmarks.errors import ConfigError, DataError


def _run(capsys, *args) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# --- D3: joining record parts into one of the parts -----------------------------------------


@pytest.mark.parametrize("alias", ["same", "link", "dotted"])
def test_joining_parts_into_one_of_them_is_refused_untouched(tmp_path, alias):
    parts = []
    for task in (0, 1):
        part = tmp_path / f"part{task}"
        (part / "_build").mkdir(parents=True)
        (part / f"train-0000{task}-of-00002.tfrec").write_bytes(b"records %d" % task)
        parts.append(part)
    out = {
        "same": parts[0],
        "link": tmp_path / "alias",
        "dotted": tmp_path / "part1" / ".." / "part0",
    }[alias]
    if alias == "link":
        out.symlink_to(parts[0])
    before = sorted(p.name for p in parts[0].iterdir())
    with pytest.raises(ConfigError, match=f"the joined folder {out} is the part {parts[0]}"):
        join_record_parts([str(p) for p in parts], str(out))
    shard = parts[0] / "train-00000-of-00002.tfrec"
    assert not shard.is_symlink() and shard.read_bytes() == b"records 0"
    assert sorted(p.name for p in parts[0].iterdir()) == before


# --- D5: label_map.csv --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rows, message",
    [
        (  # every label listed twice, the second time with other landmark ids
            ["7,0,3", "9,1,2", "107,0,3", "109,1,2"],
            "duplicate labels: '0' at rows 2, 4; '1' at rows 3, 5",
        ),
        (["7,0,3", "7,1,2"], "duplicate landmark_ids: '7' at rows 2, 3"),
        (["7,0,3", "9,2,2"], "labels must be 0..1 (one per row); not: row 3 (2)"),
        (["7,0,3", "9,1,-2"], "column 'count' must hold integer labels >= 0; negative: row 3"),
        (["7,0,3", "9,1,2.5"], "column 'count' must hold integer labels >= 0; not integers: row 3"),
    ],
)
def test_a_label_map_that_is_not_one_row_per_class_is_named(tmp_path, rows, message):
    path = tmp_path / "label_map.csv"
    path.write_text("landmark_id,label,count\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as raised:
        read_label_map(str(tmp_path))
    assert str(raised.value).startswith(f"{path}: ") and message in str(raised.value)


def test_a_valid_label_map_reads_in_any_row_order(tmp_path):
    (tmp_path / "label_map.csv").write_text("landmark_id,label,count\n9,1,2\n7,0,3\n")
    table = read_label_map(str(tmp_path))
    assert table.to_dict("list") == {"landmark_id": [9, 7], "label": [1, 0], "count": [2, 3]}
