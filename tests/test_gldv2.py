"""GLDv2 layout reading, generic CSV tables, label maps and the stratified holdout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from records_helpers import make_gldv2, train_image

from landmarks.data import gldv2, tables
from landmarks.errors import ConfigError, DataError


def test_read_train_table_gives_layout_paths_and_labels(tmp_path):
    rows = make_gldv2(tmp_path, {7: 2, 3: 1})
    table = gldv2.read_train_table(str(tmp_path))
    assert table["id"].tolist() == list(rows)
    assert table["landmark_id"].tolist() == list(rows.values())
    assert table["landmark_id"].dtype == np.int64
    for iid, path in zip(table["id"], table["path"], strict=True):
        assert path == str(train_image(tmp_path, iid))


@pytest.mark.parametrize(
    "csv, expected",
    [
        ("image,landmark_id\nabc1,3\n", r"missing column\(s\) id; found image, landmark_id"),
        (
            "id,landmark_id\nabc1,3\nabc2,x7\nabc3,2.5\n",
            r"landmark_id.*row 3 \('x7'\); row 4 \('2.5'\)",
        ),
        ("id,landmark_id\nabc1,3\nabc2,4\nabc1,5\n", r"duplicate ids: 'abc1' at rows 2, 4"),
        ("id,landmark_id\nab,3\n", r"at least 3 characters.*row 2 \('ab'\)"),
        ("id,landmark_id\nabc1,3\n,4\n", r"empty id at row 3"),
        # issue 16 B2: an id is a file stem, never a path (it would read outside the folder)
        (
            "id,landmark_id\nabc1,3\n../../outside/secret,4\n/etc/passwd,5\nab\\cd,6\n",
            r"ids are file names: letters, digits, '_' and '-'.*not: row 3 "
            r"\('../../outside/secret'\); row 4 \('/etc/passwd'\); row 5 \('ab\\\\cd'\)",
        ),
        ("id,landmark_id\nabc1,3\nabc.2,4\n", r"not: row 3 \('abc.2'\)"),
        # issue 16 W11 / W5: -1 would become a vote for "no landmark"; int64 overflow
        ("id,landmark_id\nabc1,3\nabc2,-1\nabc3,-7\n", r"negative: row 3 \('-1'\); row 4"),
        (
            "id,landmark_id\nabc1,3\nabc2,99999999999999999999\n",
            r"larger than 9223372036854775807 \(int64\): row 3 \('99999999999999999999'\)",
        ),
    ],
)
def test_bad_train_csv_is_named(tmp_path, csv, expected):
    (tmp_path / "train.csv").write_text(csv)
    with pytest.raises(DataError, match=expected) as error:
        gldv2.read_train_table(str(tmp_path))
    assert "train.csv" in str(error.value)


def test_missing_train_csv(tmp_path):
    with pytest.raises(DataError, match="train.csv: file not found"):
        gldv2.read_train_table(str(tmp_path))


def test_list_split_images_walks_the_folder_sorted_by_id(tmp_path):
    for iid in ["fed1", "abc9", "abc2"]:
        path = tmp_path / "test" / iid[0] / iid[1] / iid[2] / f"{iid}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (tmp_path / "test" / "notes.txt").write_text("not an image")
    table = gldv2.list_split_images(str(tmp_path), "test")
    assert table["id"].tolist() == ["abc2", "abc9", "fed1"]
    assert (table["landmark_id"] == -1).all()
    assert table["path"].iloc[0].endswith("test/a/b/c/abc2.jpg")


def test_list_split_images_errors(tmp_path):
    with pytest.raises(DataError, match="index: folder not found"):
        gldv2.list_split_images(str(tmp_path), "index")
    with pytest.raises(ConfigError, match="split must be one of"):
        gldv2.list_split_images(str(tmp_path), "validation")
    for folder in ["a/b/c", "x/y/z"]:
        (tmp_path / "test" / folder).mkdir(parents=True)
        (tmp_path / "test" / folder / "abc1.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match="duplicate image ids: 'abc1' at"):
        gldv2.list_split_images(str(tmp_path), "test")


def test_label_map_hand_worked():
    label_map = gldv2.build_label_map(np.array([30, 10, 10, 20, 30, 30]), min_images=2)
    assert label_map.to_dict("list") == {"landmark_id": [10, 30], "label": [0, 1], "count": [2, 3]}
    with pytest.raises(ConfigError, match="min_images"):
        gldv2.build_label_map(np.array([1]), min_images=0)


def test_stratified_holdout_takes_floor_fraction_per_class():
    sizes = {1: 10, 2: 4, 3: 1, 4: 5}  # floor(0.2 n): 2, 0, 0, 1
    table = pd.DataFrame(
        {
            "id": [f"i{k}" for k in range(sum(sizes.values()))],
            "landmark_id": np.repeat(list(sizes), list(sizes.values())),
        }
    )
    train, held = gldv2.stratified_holdout(table, 0.2, seed=0)
    assert held["landmark_id"].value_counts().to_dict() == {1: 2, 4: 1}
    assert train["landmark_id"].value_counts().to_dict() == {1: 8, 2: 4, 3: 1, 4: 4}
    assert set(train["id"]).isdisjoint(held["id"])
    assert sorted(train["id"].tolist() + held["id"].tolist()) == sorted(table["id"])
    again, _ = gldv2.stratified_holdout(table, 0.2, seed=0)
    assert again["id"].tolist() == train["id"].tolist()
    choices = {tuple(gldv2.stratified_holdout(table, 0.2, seed=s)[1]["id"]) for s in range(6)}
    assert len(choices) > 1, "the seed must change which images are held out"
    with pytest.raises(ConfigError, match="holdout fraction"):
        gldv2.stratified_holdout(table, 1.0)


def test_read_image_table_generic_csv(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "list.csv").write_text("file,cls,key\nimgs/a.jpg,4,k1\n/abs/b.png,2,k2\n")
    # issue 16 B2: paths stay inside the image root (default: the CSV's folder)...
    with pytest.raises(DataError, match=r"must stay inside .*outside: row 3 \('/abs/b.png'\)"):
        tables.read_image_table(str(tmp_path / "list.csv"), image_column="file")
    # ... and "/" allows any local path on purpose
    table = tables.read_image_table(
        str(tmp_path / "list.csv"), image_column="file", label_column="cls", image_root="/"
    )
    assert table["id"].tolist() == ["a", "b"]
    assert table["path"].tolist() == ["/imgs/a.jpg", "/abs/b.png"]
    assert table["landmark_id"].tolist() == [4, 2]
    (tmp_path / "keys.csv").write_text("file,key\nimgs/a.jpg,k1\nb.png,k2\n")
    keyed = tables.read_image_table(
        str(tmp_path / "keys.csv"), image_column="file", id_column="key", image_root="/data"
    )
    assert keyed["id"].tolist() == ["k1", "k2"]
    assert keyed["path"].tolist() == ["/data/imgs/a.jpg", "/data/b.png"]
    assert (keyed["landmark_id"] == -1).all()
    (tmp_path / "up.csv").write_text("file,key\nimgs/../../x.jpg,k1\nimgs/./ok.jpg,k2\n")
    with pytest.raises(DataError, match=r"outside: row 2 \('.*imgs/../../x.jpg'\)$"):
        tables.read_image_table(str(tmp_path / "up.csv"), image_column="file", id_column="key")
    (tmp_path / "gs.csv").write_text("file\ngs://b/data/a.jpg\ngs://b/other/c.jpg\nx/../../d.jpg\n")
    with pytest.raises(DataError, match=r"outside: row 3 .*; row 4 \('gs://b/data/x/../../d.jpg'"):
        tables.read_image_table(
            str(tmp_path / "gs.csv"), image_column="file", image_root="gs://b/data"
        )
    (tmp_path / "slash.csv").write_text("file,key\na.jpg,x/y\n")
    with pytest.raises(DataError, match=r"ids are file names: no '/'.*row 2 \('x/y'\)"):
        tables.read_image_table(str(tmp_path / "slash.csv"), image_column="file", id_column="key")
    with pytest.raises(DataError, match=r"missing column\(s\) label"):
        tables.read_image_table(
            str(tmp_path / "list.csv"), image_column="file", label_column="label"
        )
    (tmp_path / "dup.csv").write_text("file\nx/a.jpg\ny/a.jpg\n")
    with pytest.raises(DataError, match="duplicate ids: 'a' at rows 2, 3"):
        tables.read_image_table(str(tmp_path / "dup.csv"), image_column="file")
