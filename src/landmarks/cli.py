"""Command line: `python -m landmarks [--backend jax|tensorflow|auto] <command> ...`.

`--backend` chooses the Keras backend before anything imports Keras (landmarks.backend). Each
command is registered by one `_register_<name>(subparsers)` function, listed in `_REGISTRARS`
by the `@_command` decorator; options that several commands share are declared once
(`_SHARED_OPTIONS`). This module only parses and dispatches: each handler passes the options to
the one function of the stage that does the work, and prints its result. A handler imports the
heavy modules it needs only when it runs, so that `--help` does not import TensorFlow. Errors of type `LandmarksError` (bad input, bad settings)
are printed as one line `error: ...` with exit status 2; anything else is a bug and keeps its
traceback. Commands that use TensorFlow import it first through `landmarks.console`, which
keeps its C++ start-up lines off the console unless `--verbose` is given.
"""

from __future__ import annotations

import argparse
import os
import sys

from landmarks.backend import CHOICES, select_backend
from landmarks.console import import_tensorflow, set_verbose
from landmarks.errors import LandmarksError

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


# --- commands -------------------------------------------------------------------------------
# One registrar per command: it adds a subparser and sets `handler` to a function(args).


_REGISTRARS: list = []  # the order of `--help`
KERAS_COMMANDS = ("train", "infer", "demo")  # the commands that run a Keras model
TASKS = ("recognition", "retrieval")

# The options several commands take, each declared once: name -> (flags, argparse keywords).
# A command may change a keyword (e.g. a default instead of `required`) with `_add_shared`.
_SHARED_OPTIONS = {
    "config": (
        ("--config",),
        dict(required=True, help="run config (YAML or JSON), e.g. configs/demo.yaml"),
    ),
    "set": (
        ("--set",),
        dict(
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config key (repeatable), e.g. --set epochs=3 --set knn_backend=faiss",
        ),
    ),
    "task": (("--task",), dict(required=True, choices=TASKS)),
    "data-dir": (
        ("--data-dir",),
        dict(help="GLDv2-layout folder (train.csv, train/, test/, index/)"),
    ),
    "workers": (
        ("--workers",),
        dict(type=int, default=1, help="TFRecord writer processes (default 1)"),
    ),
}


def _add_shared(parser, name: str, **changes) -> None:
    """Add the shared option `name` to `parser`; `changes` override its keywords."""
    flags, options = _SHARED_OPTIONS[name]
    parser.add_argument(*flags, **{**options, **changes})


def _command(register):
    """Decorator: list a registrar, a function(subparsers) that adds one command's parser and
    sets its `handler`, a function(args) whose return value (None = 0) is the exit status."""
    _REGISTRARS.append(register)
    return register


def _pick(args, *names: str) -> dict:
    """{name: args.name} for the parsed options that a stage function takes by the same name."""
    return {name: getattr(args, name) for name in names}


def _config(args):
    """The run config of `--config` with the `--set` overrides applied."""
    from landmarks.config import Config

    return Config.load(args.config, args.overrides)


@_command
def _register_kaggle(subparsers) -> None:
    """`kaggle download|publish|wheelhouse|submit`: move data, models and wheels to and from Kaggle."""
    parser = subparsers.add_parser(
        "kaggle", help="download competition data, publish datasets, build offline wheels, submit"
    )
    parser.set_defaults(uses_tensorflow=False)
    actions = parser.add_subparsers(dest="kaggle_action", metavar="<action>", required=True)

    download = actions.add_parser("download", help="download and unzip competition data")
    download.add_argument(
        "--competition",
        dest="competitions",
        metavar="COMPETITION",
        action="append",
        default=None,
        help="competition slug (repeatable); default: landmark-recognition-2021 and "
        "landmark-retrieval-2021, each into OUT/<competition>",
    )
    download.add_argument("--out", default="input", help="folder for the data (default: input)")
    download.add_argument("--no-unzip", action="store_true", help="keep the zip archive")
    download.add_argument("--force", action="store_true", help="download again even if present")
    download.set_defaults(handler=_run_kaggle_download)

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
    publish.add_argument(
        "--license",
        dest="license_name",
        metavar="LICENSE",
        default="CC0-1.0",
        help="license name (default: CC0-1.0)",
    )
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
    publish.set_defaults(handler=_run_kaggle_publish)

    wheelhouse = actions.add_parser(
        "wheelhouse", help="wheels of the requirements + landmarks for offline notebooks"
    )
    wheelhouse.add_argument("--out", default="output/kaggle/wheels", help="folder for the wheels")
    wheelhouse.add_argument(
        "--requirements",
        default=None,
        help="requirements file (default: the pinned list shipped with landmarks)",
    )
    wheelhouse.add_argument(
        "--python-version",
        default="3.12",
        choices=("3.12", "3.11"),
        help="Python of the Kaggle image (default 3.12; older images 3.11)",
    )
    wheelhouse.add_argument(
        "--platform",
        action="append",
        default=None,
        help="pip platform tag (repeatable; default: every manylinux tag of glibc 2.35, "
        "manylinux_2_35_x86_64 ... manylinux_2_17_x86_64 and manylinux2014_x86_64)",
    )
    wheelhouse.add_argument(
        "--skip",
        action="append",
        default=[],
        help="requirement to leave out, e.g. tensorflow (repeatable)",
    )
    wheelhouse.add_argument("--no-package", action="store_true", help="leave out landmarks itself")
    wheelhouse.set_defaults(handler=_run_kaggle_wheelhouse)

    submit = actions.add_parser(
        "submit",
        help="submit a notebook version (code competitions, e.g. the 2021 ones) or a file",
        description="The 2021 landmark competitions are code competitions: Kaggle reruns a saved "
        "notebook version on the hidden test set and scores the file it writes. Submit one with "
        "--kernel OWNER/SLUG [--version N]; --file uploads a CSV to competitions that take files.",
    )
    submit.add_argument("--competition", default="landmark-recognition-2021")
    what = submit.add_mutually_exclusive_group(required=True)
    what.add_argument("--kernel", help="notebook to submit, OWNER/SLUG (code competitions)")
    what.add_argument("--file", help="submission file to upload (file competitions)")
    submit.add_argument(
        "--version", type=int, help="with --kernel: notebook version (default latest)"
    )
    submit.add_argument(
        "--output",
        default="submission.csv",
        help="with --kernel: the file the notebook writes (default submission.csv)",
    )
    submit.add_argument("--message", default="landmarks submission")
    submit.set_defaults(handler=_run_kaggle_submit)


def _run_kaggle_download(args) -> None:
    from landmarks.kaggle.client import download_competitions

    folders = download_competitions(
        args.competitions, args.out, unzip=not args.no_unzip, force=args.force
    )
    for competition, folder in folders.items():
        print(f"{competition}: {folder}")


def _run_kaggle_publish(args) -> None:
    options = _pick(args, "owner", "title", "license_name", "public", "message", "dir_mode")
    if args.package:
        from landmarks.kaggle.wheels import publish_package

        dataset_id = publish_package(args.slug, args.staging, **options)
    else:
        from landmarks.kaggle.client import publish_dataset

        dataset_id = publish_dataset(args.folder, args.slug, **options)
    print(f"published https://www.kaggle.com/datasets/{dataset_id}")


def _run_kaggle_wheelhouse(args) -> None:
    from landmarks.kaggle import wheels

    out = wheels.build_wheelhouse(
        args.out,
        args.requirements,
        python_version=args.python_version,
        platforms=tuple(args.platform or wheels.KAGGLE_PLATFORMS),
        skip=tuple(args.skip),
        include_package=not args.no_package,
    )
    print(f"wheelhouse: {out}")


def _run_kaggle_submit(args) -> None:
    from landmarks.kaggle.client import submit

    if args.kernel:  # a notebook version (code competitions)
        submit(
            args.competition, args.output, args.message, kernel=args.kernel, version=args.version
        )
        version = f"version {args.version}" if args.version else "latest version"
        print(
            f"submitted notebook {args.kernel} ({version}, output {args.output}) to "
            f"{args.competition}: Kaggle reruns it on the hidden test set, then scores it"
        )
    else:
        submit(args.competition, args.file, args.message)
        print(f"submitted {args.file} to {args.competition}")


@_command
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
    parser.set_defaults(handler=_run_demo_data, uses_tensorflow=False)


def _run_demo_data(args) -> None:
    from landmarks.data.demo import build_demo_data

    build_demo_data(args.out, **_pick(args, "seed", "source", "views_per_landmark"))


@_command
def _register_prepare(subparsers) -> None:
    """`prepare`: a GLDv2 folder (or any CSV of images) -> sharded TFRecords + manifest."""
    parser = subparsers.add_parser(
        "prepare",
        help="write sharded TFRecords (+ label_map.csv, manifest.json) from a GLDv2 folder or a CSV",
    )
    source = parser.add_argument_group("source (a GLDv2-layout folder, or any CSV of images)")
    _add_shared(source, "data-dir")
    source.add_argument(
        "--split",
        default=None,
        help="train, test or index with --data-dir; the shard prefix with --csv (default train)",
    )
    source.add_argument("--csv", help="CSV listing images (instead of --data-dir)")
    source.add_argument(
        "--image-column", help="CSV column of image paths (relative to --image-root)"
    )
    source.add_argument(
        "--label-column", help="CSV column of integer labels (omit for unlabelled images)"
    )
    source.add_argument("--id-column", help="CSV column of unique ids (default: image file name)")
    source.add_argument(
        "--image-root", help="folder relative image paths start from (default: the CSV's folder)"
    )
    parser.add_argument("--out", required=True, help="output folder, local or gs://")
    parser.add_argument(
        "--shards",
        dest="num_shards",
        metavar="SHARDS",
        type=int,
        default=None,
        help="shards of the main split (default: one per 2000 images)",
    )
    _add_shared(parser, "workers")
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="longest side in pixels (default: keep sizes; small upright RGB JPEGs are copied byte for byte)",
    )
    parser.add_argument(
        "--holdout",
        type=float,
        default=0.0,
        help="fraction per class kept for validation (default 0)",
    )
    parser.add_argument(
        "--min-images", type=int, default=1, help="leave out classes with fewer images (default 1)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds the holdout and the shuffle (default 0)"
    )
    parser.add_argument(
        "--jpeg-quality", type=int, default=95, help="quality of re-encoded JPEGs (default 95)"
    )
    parser.add_argument(
        "--num-tasks",
        type=int,
        default=1,
        help="split the build across this many machines (default 1)",
    )
    parser.add_argument(
        "--task-index", type=int, default=0, help="which of --num-tasks this run is (0-based)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--engine",
        choices=("local", "beam"),
        default="local",
        help="local: --workers processes on this machine (default); beam: Apache Beam "
        "(Dataflow, Flink, Spark, or locally), the same plan and shards",
    )
    parser.add_argument(
        "pipeline_args",
        nargs="*",
        metavar="-- BEAM_PIPELINE_OPTIONS",
        help="with --engine beam: Beam's options after `--`, e.g. -- --runner=DataflowRunner "
        "--project=P --region=R --temp_location=gs://b/tmp (default: this machine, offline)",
    )
    parser.set_defaults(handler=_run_prepare)


# The `prepare` options that landmarks.data.tfrecords.prepare and prepare_csv take by name.
_PREPARE_OPTIONS = (
    "num_shards",
    "workers",
    "image_size",
    "holdout",
    "min_images",
    "seed",
    "num_tasks",
    "task_index",
    "jpeg_quality",
    "engine",
)


def _run_prepare(args) -> None:
    from landmarks.data import tfrecords
    from landmarks.errors import ConfigError

    options = dict(
        _pick(args, *_PREPARE_OPTIONS),
        progress=not args.quiet,
        pipeline_args=tuple(args.pipeline_args),
    )
    if (args.data_dir is None) == (args.csv is None):
        raise ConfigError("prepare needs exactly one of --data-dir or --csv")
    if args.csv is not None:
        if not args.image_column:
            raise ConfigError("--csv needs --image-column")
        csv_options = _pick(args, "image_column", "label_column", "id_column", "image_root")
        split = args.split or "train"
        manifest = tfrecords.prepare_csv(args.csv, args.out, split=split, **csv_options, **options)
    else:
        if args.split is None:
            raise ConfigError("--data-dir needs --split train, test or index")
        manifest = tfrecords.prepare(args.data_dir, args.split, args.out, **options)
    print(tfrecords.summary(manifest, args.out))


@_command
def _register_merge_manifests(subparsers) -> None:
    """`merge-manifests --out DIR`: join the task manifests of a build split across machines."""
    parser = subparsers.add_parser(
        "merge-manifests", help="join the per-task manifests of a prepare split with --num-tasks"
    )
    parser.add_argument("--out", required=True, help="the records folder all tasks wrote to")
    parser.add_argument(
        "--split", default=None, help="only this build (default: every build found)"
    )
    parser.set_defaults(handler=_run_merge_manifests)


def _run_merge_manifests(args) -> None:
    from landmarks.data import tfrecords

    manifest = tfrecords.merge_manifests(args.out, args.split)
    print(tfrecords.summary(manifest, args.out))


@_command
def _register_train(subparsers) -> None:
    """`train --config F [--set key=value ...]`: train or resume the run folder of the config."""
    parser = subparsers.add_parser(
        "train",
        help="train EfficientNet-DOLG + sub-center ArcFace on TFRecords (TPU/GPU/CPU); "
        "resumes the run folder's latest checkpoint",
    )
    _add_shared(parser, "config")
    _add_shared(parser, "set")
    parser.set_defaults(handler=_run_train)


def _run_train(args) -> None:
    from landmarks.training.trainer import train

    print(f"run folder: {train(_config(args))}")


@_command
def _register_infer(subparsers) -> None:
    """`infer --config F --task recognition|retrieval --out S.csv`: embeddings, kNN, submission."""
    parser = subparsers.add_parser(
        "infer", help="embed train/test/index with a trained model and write a validated submission"
    )
    _add_shared(parser, "config")
    _add_shared(parser, "set")
    _add_shared(parser, "task")
    parser.add_argument("--out", required=True, help="submission CSV to write (atomically)")
    parser.set_defaults(handler=_run_infer)


def _run_infer(args) -> None:
    from landmarks.inference.run import run_inference

    run_inference(_config(args), args.task, args.out)


@_command
def _register_export(subparsers) -> None:
    """`export --run DIR --out DIR [--train-embeddings]`: what inference needs, for a dataset."""
    parser = subparsers.add_parser(
        "export",
        help="copy what inference needs from a run folder (model, config, label map, optional "
        "float16 train embeddings) into a folder to publish; no checkpoints",
    )
    parser.add_argument("--run", required=True, help="the run folder (output_dir/run_name)")
    parser.add_argument("--out", required=True, help="folder to write (absent, empty or an export)")
    parser.add_argument(
        "--model",
        choices=("last", "best"),
        default="last",
        help="embed_model.keras (last epoch, default) or best_embed_model.keras (best val GAP)",
    )
    parser.add_argument(
        "--train-embeddings",
        action="store_true",
        help="also embed the train records (float16, with the model fingerprint)",
    )
    parser.add_argument(
        "--records",
        dest="records_dir",
        metavar="RECORDS",
        help="records folder with label_map.csv (default: the run config's)",
    )
    parser.set_defaults(handler=_run_export)


def _run_export(args) -> None:
    from landmarks.inference.export import export_run

    export_run(args.run, args.out, **_pick(args, "model", "train_embeddings", "records_dir"))


@_command
def _register_evaluate(subparsers) -> None:
    """`evaluate --task ... --submission S.csv --solution SOL.csv [--usage U] [--json]`."""
    parser = subparsers.add_parser(
        "evaluate", help="score a submission: GAP (recognition) or mAP@100 (retrieval)"
    )
    _add_shared(parser, "task")
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
    parser.set_defaults(handler=_run_evaluate, uses_tensorflow=False)


def _run_evaluate(args) -> None:
    import json

    from landmarks.evaluation import coverage_notes, evaluate_files

    scores = evaluate_files(args.task, args.submission, args.solution, usage=args.usage)
    for key, value in scores.items():
        print(f"{key}: {value:.6f}" if isinstance(value, float) else f"{key}: {value}")
    for note in coverage_notes(scores):
        print(f"note: {note}")
    if args.json:
        print(json.dumps(scores))


@_command
def _register_demo(subparsers) -> None:
    """`demo`: the whole flow on mini-landmarks, on CPU (what `make demo` runs)."""
    parser = subparsers.add_parser(
        "demo",
        help="mini-landmarks -> TFRecords -> train -> kNN -> submission, GAP and mAP@100",
    )
    parser.add_argument("--out", default="output/demo", help="output folder (default output/demo)")
    _add_shared(
        parser,
        "data-dir",
        default="input/mini-landmarks",
        help="mini-landmarks (built when missing; default input/mini-landmarks)",
    )
    _add_shared(
        parser,
        "config",
        required=False,
        default="configs/demo.yaml",
        help="training preset (default configs/demo.yaml)",
    )
    _add_shared(parser, "set")
    _add_shared(parser, "workers", default=2, help="TFRecord writer processes (default 2)")
    parser.set_defaults(handler=_run_demo)


def _run_demo(args) -> None:
    from landmarks.demo_flow import run_demo

    run_demo(
        args.out,
        data_dir=args.data_dir,
        config_path=args.config,
        **_pick(args, "overrides", "workers"),
    )


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command that exists."""
    parser = argparse.ArgumentParser(
        prog="python -m landmarks",
        description="Google Landmark Recognition/Retrieval pipeline: data, training, kNN inference.",
    )
    parser.add_argument(
        "--backend",
        choices=CHOICES,
        default=None,
        help="Keras backend, chosen before Keras is imported: jax, tensorflow, or auto (jax on "
        "a TPU VM whose TensorFlow has no TPU support, else tensorflow). Default: "
        "KERAS_BACKEND when set, else auto",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show the libraries' own start-up lines and logs (TensorFlow's C++ messages)",
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
    set_verbose(args.verbose)
    try:
        decision = select_backend(args.backend)  # before anything imports Keras
        if getattr(args, "uses_tensorflow", True):
            import_tensorflow()
        if args.command in KERAS_COMMANDS:
            print(f"keras backend: {decision}", flush=True)
        return int(args.handler(args) or 0)
    except LandmarksError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
