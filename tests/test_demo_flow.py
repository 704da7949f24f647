"""`python -m landmarks demo` end to end on mini-landmarks with a tiny budget (64 px, 1 epoch,
2 steps), checked against independent GAP / mAP@100 computations written here."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from landmarks.cli import main
from landmarks.config import Config
from landmarks.data.demo import real_photo_queries
from landmarks.demo_flow import retrieval_grid, run_demo, summary_line, with_backbone_gem
from landmarks.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "image_size=64",
    "batch_size=8",
    "epochs=1",
    "steps_per_epoch=2",
    "validate_every=0",
    "weights=null",
]
SCORES = {
    "gap",
    "map@100",
    "gap_untrained",
    "map@100_untrained",
    "gap_backbone_gem",
    "map@100_backbone_gem",
    "map@100_unseen",
    "map@100_unseen_untrained",
    "map@100_unseen_backbone_gem",
}
COUNTS = {
    "unseen_landmarks",
    "real_photos",
    "real_photos_backbone_gem",
    "real_photos_total",
    "real_photos_unseen",
    "real_photos_unseen_total",
}
# The real second photographs of mini-landmarks (credits.csv key -> landmarks.csv name),
# written out by hand from the photo list of the README.
REAL_PHOTOS = {
    "monuments_small/eiffelTower": "Eiffel Tower",
    "monuments_small/tajMahal": "Taj Mahal",
    "monuments_small/statueOfLiberty": "Statue of Liberty",
    "monuments_small/christTheRedeemer": "Christ the Redeemer",
    "monuments_small/kutubMinar": "Qutub Minar",
    "monuments_small/mountRushmore": "Mount Rushmore",
    "monuments_small/greatWall": "Great Wall of China",
}


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def reference_gap(submission: Path, solution: Path) -> float:
    """GAP written from the competition's definition (Kaggle's Usage Ignored rows dropped)."""
    truth = {
        r["id"]: set(r["landmarks"].split()) for r in _rows(solution) if r["Usage"] != "Ignored"
    }
    landmark_queries = sum(1 for labels in truth.values() if labels)
    predictions = []
    for row in _rows(submission):
        if row["id"] in truth and row["landmarks"].strip():
            landmark, confidence = row["landmarks"].split()
            predictions.append((float(confidence), landmark in truth[row["id"]]))
    predictions.sort(key=lambda p: -p[0])
    hits, total = 0, 0.0
    for rank, (_, correct) in enumerate(predictions, start=1):
        if correct:
            hits += 1
            total += hits / rank
    return total / landmark_queries


def reference_map100(submission: Path, solution: Path) -> float:
    truth = {r["id"]: r["images"].split() for r in _rows(solution) if r["Usage"] != "Ignored"}
    ranked = {r["id"]: r["images"].split() for r in _rows(submission)}
    total = 0.0
    for query, relevant in truth.items():
        seen, hits, precision_sum = set(), 0, 0.0
        for rank, image in enumerate(ranked.get(query, [])[:100], start=1):
            if image in relevant and image not in seen:
                hits += 1
                precision_sum += hits / rank
            seen.add(image)
        total += precision_sum / min(len(relevant), 100)
    return total / len(truth)


@pytest.fixture(scope="module")
def demo(mini_landmarks, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    metrics = run_demo(
        str(out),
        data_dir=str(mini_landmarks),
        config_path=str(REPO / "configs" / "demo.yaml"),
        overrides=TINY,
        workers=1,
    )
    return out, metrics


@pytest.mark.slow
def test_demo_writes_metrics_submissions_and_plots(demo, mini_landmarks):
    out, metrics = demo
    written = json.loads((out / "metrics.json").read_text())
    assert set(written) == SCORES | COUNTS and written == metrics
    assert all(0.0 <= written[key] <= 1.0 for key in SCORES)
    assert written["real_photos_total"] == 7 and written["real_photos_unseen_total"] == 3
    assert 0 <= written["real_photos"] <= 7 and 0 <= written["real_photos_backbone_gem"] <= 7
    assert 0 <= written["real_photos_unseen"] <= min(3, written["real_photos"])
    assert written["unseen_landmarks"] == 12
    test_ids = {path.stem for path in (mini_landmarks / "test").rglob("*.jpg")}
    index_ids = {path.stem for path in (mini_landmarks / "index").rglob("*.jpg")}
    submission = _rows(out / "submission.csv")
    assert {row["id"] for row in submission} == test_ids
    retrieval = _rows(out / "retrieval_submission.csv")
    assert {row["id"] for row in retrieval} == test_ids
    assert all(set(row["images"].split()) <= index_ids for row in retrieval)
    for name in ("retrieval_grid.png", "curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.slow
def test_demo_metrics_match_an_independent_computation(demo, mini_landmarks):
    out, metrics = demo
    folders = (
        (out, ""),
        (out / "untrained", "_untrained"),
        (out / "backbone_gem", "_backbone_gem"),
    )
    for folder, suffix in folders:
        gap = reference_gap(folder / "submission.csv", mini_landmarks / "recognition_solution.csv")
        assert metrics["gap" + suffix] == pytest.approx(gap, abs=1e-9)
        map100 = reference_map100(
            folder / "retrieval_submission.csv", mini_landmarks / "retrieval_solution.csv"
        )
        assert metrics["map@100" + suffix] == pytest.approx(map100, abs=1e-9)
        unseen = reference_map100(
            folder / "retrieval_submission.csv", mini_landmarks / "retrieval_solution_unseen.csv"
        )
        assert metrics["map@100_unseen" + suffix] == pytest.approx(unseen, abs=1e-9)


@pytest.mark.slow
def test_demo_counts_the_real_photographs_it_finds(demo, mini_landmarks):
    """A seen landmark's real photograph is found by recognition (top prediction), an unseen
    one's by retrieval (its first result is an index image of its landmark)."""
    out, metrics = demo
    real = real_photo_queries(mini_landmarks)
    unseen = set(
        json.loads((mini_landmarks / "mini-landmarks.json").read_text())["unseen_landmarks"]
    )
    recognition = {
        r["id"]: r["landmarks"] for r in _rows(mini_landmarks / "recognition_solution.csv")
    }
    index_of = {}  # index image -> landmark, from the unseen solution's truth
    for row in _rows(mini_landmarks / "retrieval_solution_unseen.csv"):
        if row["Usage"] != "Ignored":
            index_of.update(dict.fromkeys(row["images"].split(), int(recognition[row["id"]])))
    for folder, key in ((out, "real_photos"), (out / "backbone_gem", "real_photos_backbone_gem")):
        predicted = {r["id"]: r["landmarks"].split()[:1] for r in _rows(folder / "submission.csv")}
        first = {
            r["id"]: r["images"].split()[:1] for r in _rows(folder / "retrieval_submission.csv")
        }
        found = [
            q
            for q, landmark in real.items()
            if (landmark in unseen and first[q] and index_of.get(first[q][0]) == landmark)
            or (landmark not in unseen and predicted[q] == [str(landmark)])
        ]
        assert metrics[key] == len(found)
        if key == "real_photos":
            found_unseen = [q for q in found if real[q] in unseen]
            assert metrics["real_photos_unseen"] == len(found_unseen)
            assert metrics["real_photos_unseen_total"] == sum(
                1 for v in real.values() if v in unseen
            )


@pytest.mark.slow
def test_retrieval_grid_shows_seen_then_unseen_queries(demo, mini_landmarks, tmp_path):
    out, _ = demo
    shown = retrieval_grid(
        str(out / "retrieval_submission.csv"),
        str(mini_landmarks),
        str(tmp_path / "grid.png"),
        rows=4,
        unseen_rows=3,
    )
    scored = {
        name: {r["id"] for r in _rows(mini_landmarks / name) if r["Usage"] != "Ignored"}
        for name in ("retrieval_solution.csv", "retrieval_solution_unseen.csv")
    }
    assert all(q in scored["retrieval_solution.csv"] for q in shown[:4])
    assert all(q in scored["retrieval_solution_unseen.csv"] for q in shown[4:])
    assert len(shown) == 7 and (tmp_path / "grid.png").stat().st_size > 0


def test_summary_line_says_seen_and_unseen_scores():
    metrics = dict.fromkeys(SCORES, 0.5) | {
        "map@100_unseen": 0.25,
        "map@100_unseen_backbone_gem": 0.75,
    }
    metrics |= {"unseen_landmarks": 12, "real_photos": 6, "real_photos_total": 7}
    metrics |= {
        "real_photos_unseen": 2,
        "real_photos_unseen_total": 3,
        "real_photos_backbone_gem": 5,
    }
    assert summary_line(metrics) == (
        "seen landmarks: GAP 0.5000 (untrained 0.5000, backbone GeM 0.5000), mAP@100 0.5000 "
        "(untrained 0.5000, backbone GeM 0.5000); 12 unseen landmarks: mAP@100 0.2500 "
        "(untrained 0.5000, backbone GeM 0.7500); real photographs found 6/7 (2/3 of unseen "
        "landmarks, by retrieval; backbone GeM 5)"
    )


def test_real_photo_queries_are_the_seven_second_photographs(mini_landmarks):
    real = real_photo_queries(mini_landmarks)
    names = {r["landmark_id"]: r["name"] for r in _rows(mini_landmarks / "landmarks.csv")}
    assert sorted(names[str(landmark)] for landmark in real.values()) == sorted(
        REAL_PHOTOS.values()
    )
    test_ids = {path.stem for path in (mini_landmarks / "test").rglob("*.jpg")}
    assert set(real) <= test_ids


def test_real_photo_queries_name_an_incomplete_folder(tmp_path):
    with pytest.raises(DataError, match="mini-landmarks.json: missing"):
        real_photo_queries(tmp_path)


def test_reference_gap_on_a_hand_worked_example(tmp_path):
    """3 landmark queries + 1 non-landmark; sorted predictions: q1 right (1/1), q4 wrong
    (non-landmark), q2 right (2/3); q3 unanswered: GAP = (1 + 2/3) / 3."""
    (tmp_path / "sol.csv").write_text(
        "id,landmarks,Usage\nq1,7,Public\nq2,8,Private\nq3,9,Public\nq4,,Public\nq5,1,Ignored\n"
    )
    (tmp_path / "sub.csv").write_text(
        "id,landmarks\nq1,7 0.9\nq2,8 0.5\nq3,\nq4,3 0.7\nq5,1 0.99\n"
    )
    expected = (1 + 2 / 3) / 3
    assert reference_gap(tmp_path / "sub.csv", tmp_path / "sol.csv") == pytest.approx(expected)


def test_demo_rejects_bad_settings_before_doing_anything(tmp_path, mini_landmarks):
    out = tmp_path / "demo"
    with pytest.raises(ConfigError, match="demo config not found: .*missing.yaml"):
        run_demo(str(out), data_dir=str(mini_landmarks), config_path=str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="unknown config key 'image_sise'"):
        run_demo(
            str(out),
            data_dir=str(mini_landmarks),
            config_path=str(REPO / "configs" / "demo.yaml"),
            overrides=["image_sise=64"],
        )
    with pytest.raises(ConfigError, match=r"backbone_gem_weight must be in \[0, 1\), got 1.0"):
        run_demo(
            str(out),
            data_dir=str(mini_landmarks),
            config_path=str(REPO / "configs" / "demo.yaml"),
            overrides=["backbone_gem_weight=1"],
        )
    assert not out.exists()


def test_backbone_gem_weight_makes_a_two_member_concat_ensemble(tmp_path):
    trained = Config.from_dict({"output_dir": str(tmp_path), "run_name": "run"})
    assert with_backbone_gem(trained, "gem.keras") is trained  # weight 0: the model alone
    trained.update({"backbone_gem_weight": 0.25})
    mixed = with_backbone_gem(trained, "gem.keras")
    assert mixed.ensemble_mode == "concat" and not trained.ensemble
    assert mixed.ensemble == [
        {"name": "run", "model_path": str(tmp_path / "run" / "embed_model.keras"), "weight": 0.75},
        {"name": "backbone_gem", "model_path": "gem.keras", "weight": 0.25},
    ]


def test_cli_demo_reports_a_bad_override_in_one_line(capsys, tmp_path):
    config = str(REPO / "configs" / "demo.yaml")
    status = main(["demo", "--out", str(tmp_path / "d"), "--config", config, "--set", "epochs"])
    assert status == 2
    assert capsys.readouterr().err.startswith("error: --set 'epochs': expected key=value")
