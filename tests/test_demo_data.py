"""mini-landmarks builder: layout, ids, solutions against the files on disk, determinism, sources,
bad inputs; and the Qt resource (.rcc) reader against rcc files written here by hand."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from landmarks import cli
from landmarks.data import demo, demo_sources
from landmarks.data.demo import build_demo_data
from landmarks.data.qt_resources import parse_rcc, read_rcc
from landmarks.errors import ConfigError, DataError

ID = re.compile(r"^[0-9a-f]{16}$")
SPLITS = ("train", "index", "test")


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def files_by_split(root: Path) -> dict[str, dict[str, Path]]:
    """{split: {image id: path}} for every file under root/<split>/."""
    found: dict[str, dict[str, Path]] = {}
    for split in SPLITS:
        found[split] = {}
        for path in (root / split).rglob("*"):
            if path.is_file():
                found[split][path.stem] = path
    return found


def check_data_set(root: Path) -> dict:
    """Assert everything a GLDv2-layout consumer relies on; returns a few facts for more checks."""
    files = files_by_split(root)
    for split, by_id in files.items():
        assert by_id, f"{split}/ is empty"
        for image_id, path in by_id.items():
            assert ID.match(image_id), path
            expected = root / split / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"
            assert path == expected
    all_ids = [i for by_id in files.values() for i in by_id]
    assert len(all_ids) == len(set(all_ids)), "an id is used in two splits"

    train = read_rows(root / "train.csv")
    assert list(train[0]) == ["id", "landmark_id"]
    assert {r["id"] for r in train} == set(files["train"]), "train.csv rows != train/ files"
    assert len(train) == len(files["train"])
    train_landmarks = {int(r["landmark_id"]) for r in train}
    summary = json.loads((root / demo.MARKER).read_text())
    unseen = set(summary["unseen_landmarks"])
    assert unseen and not unseen & train_landmarks, "an unseen landmark has train images"
    assert len(unseen) == round(demo.UNSEEN_SHARE * summary["landmarks"])
    assert summary["train_landmarks"] == len(train_landmarks)

    landmarks = read_rows(root / "landmarks.csv")
    assert list(landmarks[0])[:3] == ["landmark_id", "name", "source_file"]
    assert {int(r["landmark_id"]) for r in landmarks} == train_landmarks | unseen
    assert len(landmarks) == summary["landmarks"]
    assert all(r["name"] and r["source_file"] for r in landmarks)
    ids = sorted(train_landmarks | unseen)
    assert ids[-1] - ids[0] + 1 > len(ids), "landmark ids should not be contiguous"

    recognition = read_rows(root / "recognition_solution.csv")
    retrieval = read_rows(root / "retrieval_solution.csv")
    retrieval_unseen = {r["id"]: r for r in read_rows(root / demo.UNSEEN_SOLUTION)}
    sample = read_rows(root / "sample_submission.csv")
    assert list(recognition[0]) == ["id", "landmarks", "Usage"]
    assert list(retrieval[0]) == ["id", "images", "Usage"]
    assert list(next(iter(retrieval_unseen.values()))) == ["id", "images", "Usage"]
    assert list(sample[0]) == ["id", "landmarks"]
    test_ids = set(files["test"])
    for table in (recognition, retrieval, list(retrieval_unseen.values()), sample):
        assert [r["id"] for r in table] == sorted(test_ids), "solution ids != test/ files"

    landmark_of_query = {}
    for row in recognition:
        if row["landmarks"]:
            landmark_of_query[row["id"]] = int(row["landmarks"])
            assert int(row["landmarks"]) in train_landmarks | unseen
        # recognition scores the seen landmarks; an unseen landmark's query is named, not scored
        is_unseen = row["landmarks"] and int(row["landmarks"]) in unseen
        assert row["Usage"] == "Ignored" if is_unseen else row["Usage"] in ("Public", "Private")
    assert {r["Usage"] for r in recognition} == {"Public", "Private", "Ignored"}
    unseen_queries = {q for q, landmark in landmark_of_query.items() if landmark in unseen}
    assert {landmark_of_query[q] for q in unseen_queries} == unseen, "unseen without queries"
    assert summary["test_unseen_queries"] == len(unseen_queries)
    for row in sample:
        guess, confidence = row["landmarks"].split(" ")
        assert int(guess) in train_landmarks and 0 <= float(confidence) <= 1

    index_ids = set(files["index"])
    gt_of_landmark: dict[int, set[str]] = {}
    for row in retrieval:
        images = set(row["images"].split())
        unseen_row = retrieval_unseen[row["id"]]
        # the same truth in both files; each scores its own landmarks' queries, Ignores the rest
        assert unseen_row["images"] == row["images"]
        scored, ignored = (unseen_row, row) if row["id"] in unseen_queries else (row, unseen_row)
        assert ignored["Usage"] == "Ignored"
        if row["id"] in landmark_of_query:
            assert scored["Usage"] in ("Public", "Private")
            assert images, f"landmark query {row['id']} has no index images"
            assert images <= index_ids
            landmark = landmark_of_query[row["id"]]
            # every query of a landmark has the same ground truth: that landmark's index images
            assert gt_of_landmark.setdefault(landmark, images) == images
        else:
            assert not images and row["Usage"] == "Ignored", row
    groups = list(gt_of_landmark.values())
    union = set().union(*groups)
    assert sum(len(g) for g in groups) == len(union), "two landmarks share an index image"
    assert index_ids - union, "index/ should also hold distractors"
    assert len(landmark_of_query) < len(test_ids), "test/ should hold non-landmark queries"
    assert gt_of_landmark.keys() == train_landmarks | unseen, "a landmark without index images"
    return {
        "files": files,
        "train_landmarks": train_landmarks,
        "unseen_landmarks": unseen,
        "landmark_queries": landmark_of_query,
    }


def digest_tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def no_apt(monkeypatch) -> None:
    """Pretend apt-get and dpkg-deb are not installed (as on macOS)."""
    monkeypatch.setattr(demo_sources.shutil, "which", lambda tool: None)


# --- the shared data set (input/mini-landmarks or a fresh build) -----------------------------


def test_mini_landmarks_layout_and_solutions(mini_landmarks):
    facts = check_data_set(mini_landmarks)
    summary = json.loads((mini_landmarks / demo.MARKER).read_text())
    assert summary["counts"] == {s: len(facts["files"][s]) for s in SPLITS}
    assert summary["landmarks"] == len(facts["train_landmarks"] | facts["unseen_landmarks"])
    train = read_rows(mini_landmarks / "train.csv")
    per_landmark = {}
    for row in train:
        per_landmark[row["landmark_id"]] = per_landmark.get(row["landmark_id"], 0) + 1
    assert set(per_landmark.values()) == {summary["views_per_landmark"]}


def test_mini_landmarks_images_are_small_jpegs(mini_landmarks):
    paths = [p for by_id in files_by_split(mini_landmarks).values() for p in by_id.values()]
    for path in paths:
        with Image.open(path) as image:  # reads the header only
            assert image.format == "JPEG" and image.mode == "RGB", path
            assert max(image.size) <= 384 and min(image.size) >= 16, (path, image.size)
    for path in paths[:: max(1, len(paths) // 25)]:
        with Image.open(path) as image:
            pixels = np.asarray(image)
        assert pixels.std() > 5, f"{path} is (nearly) blank"


def test_gcompris_build_has_real_second_photographs(mini_landmarks):
    summary = json.loads((mini_landmarks / demo.MARKER).read_text())
    if summary["source"] != "gcompris":
        pytest.skip("mini-landmarks was built from the fallback photos")
    credits = read_rows(mini_landmarks / "credits.csv")
    roles = {}
    for row in credits:
        roles.setdefault(row["role"], []).append(row)
    assert len(roles["landmark"]) == summary["landmarks"] >= 45
    second = sorted(Path(r["source_file"].split(":")[-1]).stem for r in roles["second photograph"])
    assert second == sorted(demo_sources.SECOND_PHOTOS)
    assert all(r["license"] for r in credits), "every photo needs its licence"
    # 2 queries per second photograph (the photo and a view of it) + TEST_VIEWS per landmark
    expected = summary["landmarks"] * demo.TEST_VIEWS + 2 * len(second)
    assert summary["test_landmark_queries"] == expected
    # 3 of the 7 landmarks with a second photograph are unseen: TEST_VIEWS + 2 queries each
    unseen = len(summary["unseen_landmarks"])
    assert summary["test_unseen_queries"] == unseen * demo.TEST_VIEWS + 2 * 3


def test_unseen_landmarks_are_drawn_by_the_seed_and_recorded(mini_landmarks):
    """The split recorded in mini-landmarks.json is the seed's draw; every seed draws a quarter
    of the landmarks, half of those with a real second photograph among them (rounded down);
    different seeds draw different landmarks."""
    summary = json.loads((mini_landmarks / demo.MARKER).read_text())
    assert demo.unseen_landmarks(mini_landmarks) == summary["unseen_landmarks"]
    photos = demo_sources.load_photos(summary["source"], log=lambda _: None)
    count = len(photos.landmarks)
    with_second = {i for i, p in enumerate(photos.landmarks) if photos.second_photos.get(p.key)}
    drawn = []
    for seed in range(4):
        ids = demo._landmark_ids(count, seed)
        unseen = demo._unseen_landmarks(photos, ids, seed)
        assert unseen == demo._unseen_landmarks(photos, ids, seed)
        if seed == summary["seed"]:
            assert sorted(unseen) == summary["unseen_landmarks"]
        positions = frozenset(ids.index(landmark) for landmark in unseen)
        assert len(positions) == round(count / 4)
        assert len(positions & with_second) == len(with_second) // 2
        drawn.append(positions)
    assert len(set(drawn)) == 4, "different seeds should leave out different landmarks"
    if summary["source"] == "gcompris":
        assert summary["landmarks"] == 49 and len(summary["unseen_landmarks"]) == 12
        assert summary["counts"]["train"] == 37 * summary["views_per_landmark"]


def test_unseen_landmarks_names_an_old_or_missing_build(tmp_path):
    with pytest.raises(DataError, match="mini-landmarks.json: missing"):
        demo.unseen_landmarks(tmp_path)
    (tmp_path / demo.MARKER).write_text(json.dumps({"format": 1, "seed": 0}))
    with pytest.raises(DataError, match="built before unseen landmarks .*demo-data --out"):
        demo.unseen_landmarks(tmp_path)


@pytest.mark.parametrize("text", ['{"format": 2, "se', "[2]"])
def test_a_damaged_build_summary_is_named_by_every_reader(tmp_path, text):
    """mini-landmarks.json cut off or not an object: one DataError naming it and the rebuild,
    from each of its readers (the demo's own check of the build included)."""
    from landmarks.demo_flow import _ensure_data

    (tmp_path / demo.MARKER).write_text(text)
    readers = (demo.unseen_landmarks, demo.real_photo_queries, lambda d: _ensure_data(d, print))
    for reader in readers:
        with pytest.raises(DataError, match=r"mini-landmarks.json: .*demo-data --out"):
            reader(str(tmp_path))


def test_second_photograph_table_matches_the_pixels():
    """Independent check of SECOND_PHOTOS / SAME_PHOTOGRAPHS on the cached photos: copies of the
    same photograph correlate almost perfectly at 32x32, different photographs do not."""
    photo_dir = demo_sources.default_cache_dir() / demo_sources.CACHE_NAME
    if not (photo_dir / "complete.json").exists():
        pytest.skip("gcompris-qt-data photos are not cached on this machine")

    def small(path: Path) -> np.ndarray:
        with Image.open(path) as image:
            return np.asarray(image.convert("L").resize((32, 32)), dtype=np.float64).ravel()

    def correlation(small_name: str, landmark: str) -> float:
        a = small(photo_dir / "monuments_small" / f"{small_name}.webp")
        b = small(photo_dir / "monuments" / f"{landmark}.webp")
        return float(np.corrcoef(a, b)[0, 1])

    for name, landmark in demo_sources.SECOND_PHOTOS.items():
        assert correlation(name, landmark) < 0.9, name
    same = {"colosseum": "wonders/colosseum", "brandenburgGate": "germany/brandenburgGate"}
    same["greatPyramid"] = "egypt/greatPyramidOfGiza"
    assert sorted(same) == sorted(demo_sources.SAME_PHOTOGRAPHS)
    for name, landmark in same.items():
        assert correlation(name, landmark) > 0.99, name


# --- determinism, sources, targets -----------------------------------------------------------


def test_same_seed_gives_byte_identical_builds(tmp_path):
    first = build_demo_data(tmp_path / "a", seed=3, views_per_landmark=1, log=lambda _: None)
    second = build_demo_data(tmp_path / "b", seed=3, views_per_landmark=1, log=lambda _: None)
    assert first["counts"] == second["counts"]
    a, b = digest_tree(tmp_path / "a"), digest_tree(tmp_path / "b")
    assert len(a) > 100
    assert a == b


def test_fallback_source_builds_a_valid_set_and_seed_matters(tmp_path):
    messages = []
    summary = build_demo_data(tmp_path / "s0", seed=0, source="fallback", log=messages.append)
    assert summary["source"] == "fallback"
    assert any("fallback" in m for m in messages), messages
    facts = check_data_set(tmp_path / "s0")
    assert summary["landmarks"] == 10
    assert len(facts["train_landmarks"]) == 10 - round(10 * demo.UNSEEN_SHARE) == 8
    assert summary["counts"]["train"] == 8 * 12

    build_demo_data(tmp_path / "s1", seed=1, source="fallback", log=lambda _: None)
    a, b = digest_tree(tmp_path / "s0"), digest_tree(tmp_path / "s1")
    assert (tmp_path / "s0/train.csv").read_bytes() != (tmp_path / "s1/train.csv").read_bytes()
    assert not set(a) & {k for k in b if k.endswith(".jpg")}, "different seeds share image ids"


def test_auto_falls_back_when_apt_is_missing(tmp_path, monkeypatch):
    no_apt(monkeypatch)
    messages = []
    summary = build_demo_data(
        tmp_path / "out",
        source="auto",
        views_per_landmark=1,
        cache_dir=tmp_path / "empty-cache",
        log=messages.append,
    )
    assert summary["source"] == "fallback"
    assert any("apt-get" in m and "fallback" in m for m in messages), messages
    with pytest.raises(DataError, match="apt-get"):
        build_demo_data(tmp_path / "out2", source="gcompris", cache_dir=tmp_path / "empty-cache")
    assert not (tmp_path / "out2").exists()


def test_rebuild_replaces_an_earlier_build_but_not_foreign_folders(tmp_path):
    out = tmp_path / "mini"
    build_demo_data(out, seed=0, source="fallback", views_per_landmark=1, log=lambda _: None)
    build_demo_data(out, seed=5, source="fallback", views_per_landmark=1, log=lambda _: None)
    assert json.loads((out / demo.MARKER).read_text())["seed"] == 5
    check_data_set(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mini"], "temporary folders left"

    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"mine")
    with pytest.raises(DataError, match="not a mini-landmarks build"):
        build_demo_data(foreign, source="fallback")
    assert (foreign / "holiday.jpg").read_bytes() == b"mine"

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        build_demo_data(a_file, source="fallback")
    with pytest.raises(DataError, match="cannot create the build folder"):
        build_demo_data(a_file / "mini", source="fallback")

    empty = tmp_path / "empty"
    empty.mkdir()
    build_demo_data(empty, source="fallback", views_per_landmark=1, log=lambda _: None)
    check_data_set(empty)


def test_a_failed_build_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    out = tmp_path / "mini"
    build_demo_data(out, seed=0, source="fallback", views_per_landmark=1, log=lambda _: None)
    before = digest_tree(out)
    written = []

    def crash_after_ten(root, item, original=demo._write_image):
        if len(written) == 10:
            raise KeyboardInterrupt("killed")
        written.append(item)
        original(root, item)

    monkeypatch.setattr(demo, "_write_image", crash_after_ten)
    with pytest.raises(KeyboardInterrupt):
        build_demo_data(out, seed=1, source="fallback", views_per_landmark=1, log=lambda _: None)
    assert digest_tree(out) == before, "the earlier build must survive a failed rebuild"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mini"]
    written.clear()
    with pytest.raises(KeyboardInterrupt):
        build_demo_data(tmp_path / "new", source="fallback", log=lambda _: None)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "flickr"}, "unknown demo data source 'flickr'"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"seed": 1.5}, "seed must be a non-negative integer"),
        ({"views_per_landmark": 0}, "views_per_landmark must be at least 1"),
    ],
)
def test_bad_settings_raise_config_error(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_demo_data(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_cli_demo_data(tmp_path, capsys):
    out = tmp_path / "mini"
    argv = ["demo-data", "--out", str(out), "--source", "fallback", "--views-per-landmark", "1"]
    assert cli.main(argv) == 0
    assert "fallback" in capsys.readouterr().out
    check_data_set(out)

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert cli.main(["demo-data", "--out", str(foreign), "--source", "fallback"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(foreign) in err and err.count("\n") == 1

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo-data", "--out", str(out), "--source", "bogus"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


# --- the Qt resource reader, on rcc files written here from the format description -------------


def make_rcc(tree: dict, version: int = 3) -> bytes:
    """An rcc file holding `tree` ({name: subtree | (content, flags)}): header, then data,
    names and the tree table. flags 1 stores the content as u32 size + zlib stream."""
    entry_size = 14 if version == 1 else 22
    entries: list[tuple[str, object]] = [("", tree)]  # breadth first: children contiguous
    children_start: dict[int, int] = {}
    position = 0
    while position < len(entries):
        _, node = entries[position]
        if isinstance(node, dict):
            children_start[position] = len(entries)
            entries.extend(sorted(node.items()))
        position += 1
    data = names = b""
    table = b""
    for position, (name, node) in enumerate(entries):
        name_offset = len(names)
        names += struct.pack(">HI", len(name), 0) + name.encode("utf-16-be")
        if isinstance(node, dict):
            body = struct.pack(">HII", 2, len(node), children_start[position])
        else:
            content, flags = node
            stored = content
            if flags & 1:
                stored = struct.pack(">I", len(content)) + zlib.compress(content)
            body = struct.pack(">HHHI", flags, 0, 0, len(data))
            data += struct.pack(">I", len(stored)) + stored
        entry = struct.pack(">I", name_offset) + body
        if version >= 2:
            entry += struct.pack(">Q", 1_700_000_000_000)
        assert len(entry) == entry_size
        table += entry
    header_size = 24 if version >= 3 else 20
    data_offset = header_size
    names_offset = data_offset + len(data)
    tree_offset = names_offset + len(names)
    header = b"qres" + struct.pack(">IIII", version, tree_offset, data_offset, names_offset)
    if version >= 3:
        header += struct.pack(">I", 0)
    return header + data + names + table


WEBP_LIKE = bytes(range(256)) * 40
SAMPLE_TREE = {
    "gcompris": {
        "photos": {"a.webp": (WEBP_LIKE, 1), "b.txt": ("héllo".encode(), 0)},
        "README": (b"Copyright: me\nLicense: CC0-1.0\nFiles: a.webp\n", 1),
    }
}


@pytest.mark.parametrize("version", [1, 2, 3])
def test_rcc_reader_reads_stored_and_zlib_entries(version):
    files = parse_rcc(make_rcc(SAMPLE_TREE, version))
    assert files == {
        "gcompris/photos/a.webp": WEBP_LIKE,
        "gcompris/photos/b.txt": "héllo".encode(),
        "gcompris/README": SAMPLE_TREE["gcompris"]["README"][0],
    }
    only = parse_rcc(make_rcc(SAMPLE_TREE, version), include=lambda p: p.endswith(".webp"))
    assert list(only) == ["gcompris/photos/a.webp"]


def test_rcc_reader_names_the_file_when_corrupt(tmp_path):
    good = make_rcc(SAMPLE_TREE)
    cases = {
        "truncated.rcc": (good[: len(good) // 2], "outside the file"),
        "magic.rcc": (b"qrez" + good[4:], "magic"),
        "version.rcc": (good[:4] + struct.pack(">I", 9) + good[8:], "unknown format version 9"),
        "empty.rcc": (b"", "outside the file"),
    }
    damaged = bytearray(good)  # overwrite the middle of a.webp's zlib stream
    stream = good.index(zlib.compress(WEBP_LIKE))
    damaged[stream + 2 : stream + 12] = b"\xff" * 10
    cases["zlib.rcc"] = (bytes(damaged), "zlib stream of 'gcompris/photos/a.webp' is damaged")
    zstd = make_rcc({"x.webp": (b"abc", 4)})
    cases["zstd.rcc"] = (zstd, "'x.webp' is zstd-compressed (flag 4)")
    cases["flags.rcc"] = (make_rcc({"x.webp": (b"abc", 8)}), "unknown flags 0x0008")
    for name, (blob, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(blob)
        with pytest.raises(DataError, match=re.escape(message)) as error:
            read_rcc(path)
        assert str(path) in str(error.value)
    with pytest.raises(DataError, match="cannot read"):
        read_rcc(tmp_path / "missing.rcc")


def test_rcc_reader_rejects_a_cycle_in_the_tree():
    blob = bytearray(make_rcc({"d": {"x.txt": (b"x", 0)}}))
    tree_offset = struct.unpack(">I", blob[8:12])[0]
    # make directory "d" (entry 1) list the root (entry 0) as its child
    struct.pack_into(">I", blob, tree_offset + 22 + 10, 0)
    with pytest.raises(DataError, match="cycle"):
        parse_rcc(bytes(blob), source="cyclic.rcc")


def test_extract_rcc_photos_reports_the_corrupt_file(tmp_path):
    rcc_dir = tmp_path / "rcc"
    rcc_dir.mkdir()
    for activity in ("explore_monuments", "categorization", "erase", "explore_world_animals"):
        (rcc_dir / f"{activity}.rcc").write_bytes(make_rcc({"unrelated.txt": (b"x", 0)}))
    (rcc_dir / "erase.rcc").write_bytes(b"qres" + b"\x00" * 7)
    with pytest.raises(DataError, match=re.escape(str(rcc_dir / "erase.rcc"))):
        demo_sources.extract_rcc_photos(rcc_dir, tmp_path / "out")
    (rcc_dir / "erase.rcc").unlink()
    with pytest.raises(DataError, match="erase.rcc: missing"):
        demo_sources.extract_rcc_photos(rcc_dir, tmp_path / "out")


def test_extract_rcc_photos_writes_photos_and_credits(tmp_path):
    prefix = "gcompris/src/activities/erase/resource/"
    readme = (
        "Copyright: Timothée Giet\nLicense: CC-BY-SA 4.0\nFiles:\nkey.svg\n\n"
        "Copyright: Some One\nSource: https://example.org/a.jpg\nLicense: CC0-1.0\n"
        "Comments: cropping\nFiles: kitten.webp\n"
    )

    def nest(path: str, leaf) -> dict:
        head, _, rest = path.partition("/")
        return {head: nest(rest, leaf) if rest else leaf}

    rcc_dir = tmp_path / "rcc"
    rcc_dir.mkdir()
    for activity in ("explore_monuments", "categorization", "explore_world_animals"):
        (rcc_dir / f"{activity}.rcc").write_bytes(make_rcc({"unrelated.txt": (b"x", 0)}))
    tree = nest(prefix.rstrip("/"), {"kitten.webp": (WEBP_LIKE, 1), "README": (readme.encode(), 1)})
    (rcc_dir / "erase.rcc").write_bytes(make_rcc(tree))
    out = tmp_path / "out"
    assert demo_sources.extract_rcc_photos(rcc_dir, out) == 1
    assert (out / "animals_erase" / "kitten.webp").read_bytes() == WEBP_LIKE
    credits = json.loads((out / "credits.json").read_text())
    assert credits == {
        "animals_erase/key.svg": {"author": "Timothée Giet", "license": "CC-BY-SA 4.0", "url": ""},
        "animals_erase/kitten.webp": {
            "author": "Some One",
            "license": "CC0-1.0",
            "url": "https://example.org/a.jpg",
        },
    }
