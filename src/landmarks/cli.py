"""Command line: `python -m landmarks <command> ...`.

Each command is registered by one `_register_<name>(subparsers)` function listed in
`_REGISTRARS`; its handler imports the heavy modules it needs only when it runs, so that
`--help` does not import TensorFlow. Errors of type `LandmarksError` (bad input, bad settings)
are printed as one line `error: ...` with exit status 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from landmarks.errors import LandmarksError

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# --- commands -------------------------------------------------------------------------------
# One registrar per command: it adds a subparser and sets `handler` to a function(args) -> int.


_REGISTRARS: list = []


def _register_kaggle(subparsers) -> None:
    """`kaggle download|publish|wheelhouse|submit`: move data, models and wheels to and from Kaggle."""
    parser = subparsers.add_parser(
        "kaggle", help="download competition data, publish datasets, build offline wheels, submit"
    )
    actions = parser.add_subparsers(dest="kaggle_action", metavar="<action>", required=True)

    download = actions.add_parser("download", help="download and unzip competition data")
    download.add_argument(
        "--competition",
        action="append",
        default=None,
        help="competition slug (repeatable); default: landmark-recognition-2021 and "
        "landmark-retrieval-2021, each into OUT/<competition>",
    )
    download.add_argument("--out", default="input", help="folder for the data (default: input)")
    download.add_argument("--no-unzip", action="store_true", help="keep the zip archive")
    download.add_argument("--force", action="store_true", help="download again even if present")

    publish = actions.add_parser(
        "publish", help="upload a folder (or the landmarks wheel) as a Kaggle dataset"
    )
    source = publish.add_mutually_exclusive_group(required=True)
    source.add_argument("--folder", help="folder to upload: TFRecords, a run folder, a wheelhouse")
    source.add_argument(
        "--package", action="store_true", help="build the landmarks wheel and upload it"
    )
    publish.add_argument("--slug", required=True, help="dataset slug, 6-50 of [a-z0-9-]")
    publish.add_argument("--owner", help="Kaggle user name (default: the credentials' user)")
    publish.add_argument("--title", help="dataset title, 6-50 characters (default: from slug)")
    publish.add_argument("--license", default="CC0-1.0", help="license name (default: CC0-1.0)")
    publish.add_argument("--public", action="store_true", help="create it public (default private)")
    publish.add_argument("--message", default="New version from landmarks", help="version notes")
    publish.add_argument(
        "--dir-mode",
        default="zip",
        choices=("zip", "tar", "skip"),
        help="how sub-folders are uploaded (default: zip)",
    )
    publish.add_argument(
        "--staging",
        default="output/kaggle/package",
        help="with --package: folder where the wheel is built (default: output/kaggle/package)",
    )

    wheelhouse = actions.add_parser(
        "wheelhouse", help="wheels of the requirements + landmarks for offline notebooks"
    )
    wheelhouse.add_argument("--out", default="output/kaggle/wheels", help="folder for the wheels")
    wheelhouse.add_argument("--requirements", default="requirements.txt")
    wheelhouse.add_argument("--python-version", default="3.11", help="Kaggle image's Python")
    wheelhouse.add_argument("--platform", default="manylinux_2_28_x86_64")
    wheelhouse.add_argument(
        "--skip",
        action="append",
        default=[],
        help="requirement to leave out, e.g. tensorflow (repeatable)",
    )
    wheelhouse.add_argument("--no-package", action="store_true", help="leave out landmarks itself")

    submit = actions.add_parser("submit", help="submit a file to a competition")
    submit.add_argument("--competition", default="landmark-recognition-2021")
    submit.add_argument("--file", required=True, help="submission file, e.g. submission.csv")
    submit.add_argument("--message", default="landmarks submission")
    parser.set_defaults(handler=_run_kaggle)


def _run_kaggle(args) -> int:
    from landmarks import kaggle_io

    if args.kaggle_action == "download":
        competitions = args.competition or list(kaggle_io.DEFAULT_COMPETITIONS)
        for competition in competitions:
            folder = kaggle_io.download_competition(
                competition,
                os.path.join(args.out, competition),
                unzip=not args.no_unzip,
                force=args.force,
            )
            print(f"{competition}: {folder}")
    elif args.kaggle_action == "publish":
        options = dict(
            owner=args.owner,
            title=args.title,
            license_name=args.license,
            public=args.public,
            message=args.message,
            dir_mode=args.dir_mode,
        )
        if args.package:
            dataset_id = kaggle_io.publish_package(args.slug, args.staging, **options)
        else:
            dataset_id = kaggle_io.publish_dataset(args.folder, args.slug, **options)
        print(f"published https://www.kaggle.com/datasets/{dataset_id}")
    elif args.kaggle_action == "wheelhouse":
        out = kaggle_io.build_wheelhouse(
            args.out,
            args.requirements,
            python_version=args.python_version,
            platform=args.platform,
            skip=tuple(args.skip),
            include_package=not args.no_package,
        )
        print(f"wheelhouse: {out}")
    else:
        kaggle_io.submit(args.competition, args.file, args.message)
        print(f"submitted {args.file} to {args.competition}")
    return 0


_REGISTRARS.append(_register_kaggle)


def _register_infer(subparsers) -> None:
    """`infer --config F --task recognition|retrieval --out S.csv`: embeddings, kNN, submission."""
    parser = subparsers.add_parser(
        "infer", help="embed train/test/index with a trained model and write a validated submission"
    )
    parser.add_argument("--config", required=True, help="run config (YAML or JSON)")
    parser.add_argument("--task", required=True, choices=("recognition", "retrieval"))
    parser.add_argument("--out", required=True, help="submission CSV to write (atomically)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable), e.g. --set knn_backend=faiss",
    )
    parser.set_defaults(handler=_run_infer)


def _run_infer(args) -> int:
    from landmarks.config import Config
    from landmarks.inference import run_inference

    config = Config.load(args.config, args.overrides)
    run_inference(config, args.task, args.out)
    return 0


_REGISTRARS.append(_register_infer)


def _register_evaluate(subparsers) -> None:
    """`evaluate --task ... --submission S.csv --solution SOL.csv [--usage U] [--json]`."""
    parser = subparsers.add_parser(
        "evaluate", help="score a submission: GAP (recognition) or mAP@100 (retrieval)"
    )
    parser.add_argument("--task", required=True, choices=("recognition", "retrieval"))
    parser.add_argument("--submission", required=True, help="id,landmarks or id,images CSV")
    parser.add_argument("--solution", required=True, help="id,landmarks,Usage or id,images,Usage")
    parser.add_argument(
        "--usage",
        choices=("public", "private", "all"),
        default="all",
        help="solution rows to score (Ignored rows never count; default all)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the scores as one JSON object on the last line"
    )
    parser.set_defaults(handler=_run_evaluate)


def _run_evaluate(args) -> int:
    import json

    from landmarks.evaluation import evaluate_files

    scores = evaluate_files(args.task, args.submission, args.solution, usage=args.usage)
    for key, value in scores.items():
        print(f"{key}: {value:.6f}" if isinstance(value, float) else f"{key}: {value}")
    if args.json:
        print(json.dumps(scores))
    return 0


_REGISTRARS.append(_register_evaluate)


def _register_demo_data(subparsers) -> None:
    """`demo-data --out DIR`: build the mini-landmarks data set from real photographs."""
    parser = subparsers.add_parser(
        "demo-data", help="build the mini-landmarks demo data set (GLDv2 layout, real photos)"
    )
    parser.add_argument(
        "--out", required=True, help="folder to build (absent, empty or an earlier build)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--source",
        choices=("auto", "gcompris", "fallback"),
        default="auto",
        help="photos: gcompris-qt-data via apt-get, the scikit-image/scikit-learn fallback, "
        "or auto (gcompris, else fallback; default)",
    )
    parser.add_argument(
        "--views-per-landmark", type=int, default=12, help="train images per landmark (default 12)"
    )
    parser.set_defaults(handler=_run_demo_data)


def _run_demo_data(args) -> int:
    from landmarks.data.demo import build_demo_data

    build_demo_data(
        args.out, seed=args.seed, source=args.source, views_per_landmark=args.views_per_landmark
    )
    return 0


_REGISTRARS.append(_register_demo_data)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command that exists."""
    parser = argparse.ArgumentParser(
        prog="python -m landmarks",
        description="Google Landmark Recognition/Retrieval pipeline: data, training, kNN inference.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for register in _REGISTRARS:
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv[1:]), run the command, return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except LandmarksError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
