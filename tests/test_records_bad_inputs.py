"""Every kind of bad or unusual image: skipped with a reason, or converted to an upright RGB JPEG.

References are computed here with numpy / Pillow directly, not with the code under test.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from records_helpers import (
    decode,
    jpeg_bytes,
    make_gldv2,
    picture,
    png_bytes,
    random_scan_data,
    read_records,
    train_image,
)

from landmarks.cli import main
from landmarks.data.images import ImageSkipped, encode_image
from landmarks.data.tfrecords import list_shards, prepare, read_label_map


def _write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute pixel difference; JPEG round trips of these tiny, sharp test pictures
    stay under 10, unrelated pictures differ by 30 or more."""
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def test_small_upright_rgb_jpeg_is_copied_byte_for_byte(tmp_path):
    data = jpeg_bytes(picture(40, 30))
    path = _write(tmp_path, "a.jpg", data)
    for max_side in (None, 40, 64):
        image = encode_image(path, max_side)
        assert image.action == "copied"
        assert image.data == data
        assert (image.width, image.height) == (40, 30)


def test_large_jpeg_is_shrunk_to_the_longest_side_keeping_aspect(tmp_path):
    pixels = picture(200, 100)
    path = _write(tmp_path, "big.jpg", jpeg_bytes(pixels))
    image = encode_image(path, max_side=50)
    assert image.action == "reencoded" and image.changes == ("resized",)
    assert (image.width, image.height) == (50, 25)
    stored = decode(image.data)
    assert stored.shape == (25, 50, 3)
    reference = np.asarray(Image.fromarray(pixels).resize((50, 25), Image.Resampling.BICUBIC))
    assert _mean_abs(stored, reference) < 10.0


def test_png_content_under_a_jpg_name_becomes_a_jpeg(tmp_path):
    pixels = picture(30, 20, seed=3)
    path = _write(tmp_path, "really_png.jpg", png_bytes(pixels))
    image = encode_image(path)
    assert image.data.startswith(b"\xff\xd8\xff")
    assert image.changes == ("converted:PNG/RGB",)
    assert _mean_abs(decode(image.data), pixels) < 10.0


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    pixels = picture(32, 24, seed=4)
    path = _write(tmp_path, "cmyk.jpg", jpeg_bytes(pixels, mode="CMYK"))
    image = encode_image(path)
    assert image.changes == ("converted:JPEG/CMYK",)
    stored = Image.open(io.BytesIO(image.data))
    assert stored.mode == "RGB"
    # Pillow's CMYK -> RGB of the same file is the reference (CMYK JPEGs store inverted ink).
    reference = np.asarray(Image.open(path).convert("RGB"))
    assert _mean_abs(np.asarray(stored), reference) < 10.0


def test_grayscale_jpeg_becomes_three_equal_channels(tmp_path):
    pixels = picture(32, 24, seed=5)
    path = _write(tmp_path, "gray.jpg", jpeg_bytes(pixels, mode="L"))
    image = encode_image(path)
    assert image.changes == ("converted:JPEG/L",)
    stored = decode(image.data).astype(np.int16)
    assert np.abs(stored[..., 0] - stored[..., 1]).max() <= 2
    gray = np.asarray(Image.open(path)).astype(np.float32)
    assert _mean_abs(stored[..., 0], gray) < 10.0


def test_exif_orientation_is_applied(tmp_path):
    pixels = picture(40, 20, seed=6)  # width 40, height 20 as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = _write(tmp_path, "rotated.jpg", jpeg_bytes(pixels, exif=exif))
    image = encode_image(path)
    assert image.changes == ("rotated",)
    assert (image.width, image.height) == (20, 40)
    upright = np.rot90(pixels, k=-1)  # numpy: k=-1 turns clockwise
    assert _mean_abs(decode(image.data), upright) < 10.0
    assert _mean_abs(decode(image.data), np.rot90(pixels, k=1)) > 30.0  # the wrong way round


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: b"", r"empty file \(0 bytes\)"),
        (
            lambda p: np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes(),
            "not an image",
        ),
        (lambda p: jpeg_bytes(p)[: len(jpeg_bytes(p)) // 2], "truncated JPEG"),
        (lambda p: b"\xff\xd8\xff\xe0" + b"\x00" * 40, "not an image"),
    ],
    ids=["zero-byte", "random-bytes", "truncated", "corrupt-header"],
)
def test_unusable_files_are_skipped_with_a_reason(tmp_path, make, reason):
    path = _write(tmp_path, "bad.jpg", make(picture(60, 40, seed=7)))
    with pytest.raises(ImageSkipped, match=reason):
        encode_image(path)


def test_truncated_jpeg_that_needs_resizing_is_skipped(tmp_path):
    data = jpeg_bytes(picture(200, 100, seed=8))
    path = _write(tmp_path, "cut.jpg", data[: len(data) // 2])
    with pytest.raises(ImageSkipped, match="truncated"):
        encode_image(path, max_side=50)


def test_missing_file_is_skipped(tmp_path):
    with pytest.raises(ImageSkipped, match="missing file"):
        encode_image(str(tmp_path / "nope.jpg"))


def test_prepare_lists_every_skipped_and_converted_image(tmp_path, capsys):
    rows = make_gldv2(tmp_path / "data", {5: 6, 9: 6})
    ids = list(rows)
    bad = {
        ids[0]: ("empty file", b""),
        ids[1]: ("truncated", jpeg_bytes(picture(48, 32))[:300]),
        ids[2]: ("not an image", b"garbage" * 50),
        ids[4]: ("corrupt JPEG scan data", random_scan_data(jpeg_bytes(picture(48, 32)))),
        ids[7]: ("missing file", None),
    }
    for iid, (_, data) in bad.items():
        path = train_image(tmp_path / "data", iid)
        if data is None:
            path.unlink()
        else:
            path.write_bytes(data)
    train_image(tmp_path / "data", ids[3]).write_bytes(png_bytes(picture(48, 32, seed=1)))
    train_image(tmp_path / "data", ids[8]).write_bytes(
        jpeg_bytes(picture(48, 32, seed=2), mode="L")
    )

    status = main(
        [
            "prepare",
            "--data-dir",
            str(tmp_path / "data"),
            "--split",
            "train",
            "--out",
            str(tmp_path / "rec"),
            "--shards",
            "2",
            "--quiet",
        ]
    )
    assert status == 0
    screen = capsys.readouterr().out
    assert "5 skipped" in screen and "skipped (missing file): 1" in screen

    manifest = json.loads((tmp_path / "rec" / "manifest.json").read_text())
    build = manifest["builds"]["train"]
    reasons = {entry["id"]: entry["reason"] for entry in build["skipped"]}
    assert set(reasons) == set(bad)
    for iid, (reason, _) in bad.items():
        assert reasons[iid].startswith(reason)
    assert build["num_skipped"] == 5 and manifest["totals"]["skipped"] == 5
    assert build["changes"] == {"converted:JPEG/L": 1, "converted:PNG/RGB": 1}
    records = read_records(list_shards(str(tmp_path / "rec"), "train"))
    assert sorted(r["id"] for r in records) == sorted(set(ids) - set(bad))
    assert all(r["encoded"].startswith(b"\xff\xd8\xff") for r in records)
    # label_map counts are the records actually written: class 5 lost ids 0,1,2,4; 9 lost id 7
    assert read_label_map(str(tmp_path / "rec"))["count"].tolist() == [2, 5]


def test_bad_csv_is_one_line_error_with_exit_status_2(tmp_path, capsys):
    (tmp_path / "train.csv").write_text("id,landmark_id\nabc1,3\nabc2,three\n")
    status = main(
        ["prepare", "--data-dir", str(tmp_path), "--split", "train", "--out", str(tmp_path / "rec")]
    )
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "row 3 ('three')" in err and "\n" not in err
    assert not (tmp_path / "rec").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--split", "train"], "exactly one of --data-dir or --csv"),
        (["--data-dir", "X"], "needs --split"),
        (["--csv", "x.csv"], "needs --image-column"),
        (["--data-dir", "X", "--split", "test", "--holdout", "0.2"], "holdout needs labels"),
    ],
)
def test_bad_prepare_arguments(tmp_path, capsys, args, message):
    if "X" in args:
        args = [str(tmp_path) if a == "X" else a for a in args]
        (tmp_path / "test" / "a").mkdir(parents=True)
        (tmp_path / "test" / "a" / "abc1.jpg").write_bytes(jpeg_bytes(picture(8, 8)))
    status = main(["prepare", "--out", str(tmp_path / "rec"), *args])
    assert status == 2
    assert message in capsys.readouterr().err


def test_prepare_rejects_bad_options(tmp_path):
    from landmarks.errors import ConfigError

    make_gldv2(tmp_path, {1: 2})
    for options, message in [
        ({"workers": 0}, "workers"),
        ({"num_shards": 0}, "num_shards"),
        ({"image_size": 0}, "image_size"),
        ({"num_tasks": 2, "task_index": 2}, "task_index"),
        ({"holdout": 1.5}, "holdout"),
        ({"jpeg_quality": 101}, "jpeg_quality"),
    ]:
        with pytest.raises(ConfigError, match=message):
            prepare(str(tmp_path), "train", str(tmp_path / "rec"), progress=False, **options)


def test_an_id_that_walks_out_of_the_data_folder_is_refused(tmp_path, capsys):
    """Issue 16 B2: `../../outside/secret` in train.csv made prepare read a file outside the
    data folder and store it. Now the rows are named and nothing is written."""
    rows = make_gldv2(tmp_path / "data", {5: 3})
    secret = tmp_path / "outside" / "secret.jpg"
    secret.parent.mkdir()
    secret.write_bytes(jpeg_bytes(picture(48, 32, seed=9)))
    with open(tmp_path / "data" / "train.csv", "a") as table:
        table.write("../../outside/secret,5\n")
    out = tmp_path / "rec"
    args = ["prepare", "--data-dir", str(tmp_path / "data"), "--split", "train", "--out", str(out)]
    assert main([*args, "--quiet"]) == 2
    error = capsys.readouterr().err
    assert (
        f"row {len(rows) + 2} ('../../outside/secret')" in error and "ids are file names" in error
    )
    assert not out.exists()
