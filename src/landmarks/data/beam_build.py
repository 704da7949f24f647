"""The record build on Apache Beam (Dataflow, Flink, Spark, or this machine): the local build's
plan and shard writer, with Beam deciding where each shard is written.

    python -m landmarks prepare --data-dir gs://b/gldv2 --split train --out gs://b/records \\
        --image-size 512 --engine beam -- --runner=DataflowRunner --project=P --region=R ...

`landmarks.data.tfrecords.write_records` plans the build exactly as for `--engine local` (same
seed -> the same shards, the same ids in each shard in the same order, the same label map and
holdout) and hands this task's shard jobs to `run`, which writes them to one file in `_build/`
(line 0: the task manifest without its shards; then one shard job per line) and runs

    Create([(shard, offset, length), ...])   one small element per planned shard
    | Reshuffle()                            spreads the shards over the workers
    | ParDo(WriteShardFn)                    reads its job's line; a shard whose receipt is valid
                                             is skipped, any other is written by
                                             shard_writer.write_shard (temporary name, renamed,
                                             then its receipt): the local build's function
    | ToList() | ParDo(CommitFn)             the task manifest from the shards' receipts, then
                                             manifest.json (`commit`: tfrecords.commit_task,
                                             handed in), last

The jobs travel in a file, not in Create's elements, because Create embeds its elements in the
job graph, which Dataflow limits to 10 MB; GLDv2's train plan (1.58M ids and paths) is ~130 MB.
TensorFlow is imported in the DoFns' `setup`, on the workers; images and shards are read and
written through tf.io.gfile, so local paths and gs:// both work. Bad images are skipped and
reported by the receipts, as in the local build.

Runner: no `--runner`, or `--runner=DirectRunner`, runs on `FnApiRunner`, the Python engine the
DirectRunner itself uses for batch pipelines. Since Beam 2.68 the DirectRunner first hands a
pipeline to the Prism runner, which downloads a binary from GitHub on first use; pinning the
Python engine keeps a local build offline. `--direct_num_workers=N
--direct_running_mode=multi_processing` gives it N worker processes. `--runner=PrismRunner`
still chooses Prism.
"""

from __future__ import annotations

import dataclasses
import json

from landmarks.errors import ConfigError, DataError

try:
    import apache_beam as beam
except ImportError as error:  # an optional dependency: only `--engine beam` needs it
    raise ConfigError(
        "--engine beam needs Apache Beam: pip install apache-beam==2.77.0 (pinned in requirements.txt)"
    ) from error

LOCAL_RUNNER = "FnApiRunner"
_DIRECT_RUNNER_NAMES = ("direct", "directrunner")


def pipeline_options(args) -> beam.options.pipeline_options.PipelineOptions:
    """Beam's options from `args` (["--runner=...", ...]); the DirectRunner (or no runner)
    pinned to LOCAL_RUNNER (see the module docstring)."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    args = list(args)
    runner = PipelineOptions(args).view_as(StandardOptions).runner
    if runner is None or str(runner).lower() in _DIRECT_RUNNER_NAMES:
        args.append(f"--runner={LOCAL_RUNNER}")
    return PipelineOptions(args)


def jobs_file(out_dir: str, split: str, task_index: int, num_tasks: int) -> str:
    """Path of this task's jobs file in `out_dir/_build/`."""
    from landmarks.data.shard_writer import BUILD_DIR, join

    name = f"{split}.beam-jobs-{task_index:05d}-of-{num_tasks:05d}.jsonl"
    return join(join(out_dir, BUILD_DIR), name)


def write_jobs(path: str, head: dict, jobs: list) -> list[tuple[int, int]]:
    """Write `head` (line 0) and `jobs` (ShardJob, one per line) as JSON lines to `path`
    (atomically); return the (offset, length) in bytes of every line, head first."""
    from landmarks.io_utils import write_bytes_atomic

    lines = [json.dumps(head).encode("utf-8")]
    lines += [json.dumps(dataclasses.asdict(job)).encode("utf-8") for job in jobs]
    spans, offset = [], 0
    for line in lines:
        spans.append((offset, len(line)))
        offset += len(line) + 1
    write_bytes_atomic(path, b"\n".join(lines) + b"\n")
    return spans


def read_line(path: str, offset: int, length: int) -> dict:
    """The JSON object stored at bytes [offset, offset + length) of `path` (local or gs://)."""
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "rb") as handle:
        handle.seek(offset)
        return json.loads(handle.read(length))


class WriteShardFn(beam.DoFn):
    """(shard file, offset, length) -> the shard's receipt; writes the shard unless a valid
    receipt says it is complete (a rerun or a retried bundle rewrites nothing)."""

    def __init__(self, path: str):
        self.path = path  # the jobs file

    def setup(self):
        from landmarks.data import shard_writer  # imports TensorFlow, once per worker process

        self.shard_writer = shard_writer

    def process(self, element):
        _file, offset, length = element
        job = self.shard_writer.ShardJob(**read_line(self.path, offset, length))
        receipt = self.shard_writer.read_receipt(job.out_dir, job.file, job.fingerprint)
        yield receipt if receipt is not None else self.shard_writer.write_shard(job)


class CommitFn(beam.DoFn):
    """[receipts] -> nothing; writes the task manifest (head from the jobs file, receipts in
    plan order) to `out_dir`, then manifest.json when every task is done."""

    def __init__(
        self, out_dir: str, path: str, head_span: tuple[int, int], files: list[str], commit
    ):
        self.out_dir, self.path, self.head_span, self.files = out_dir, path, head_span, files
        self.commit = commit  # tfrecords.commit_task (pickled by reference)

    def process(self, receipts):
        head = read_line(self.path, *self.head_span)
        by_file = {r["file"]: r for r in receipts}
        missing = [f for f in self.files if f not in by_file]
        if missing:
            raise DataError(f"beam build of {head['split']!r}: no receipt for {', '.join(missing)}")
        self.commit(self.out_dir, head, [by_file[f] for f in self.files])


def run(jobs: list, out_dir: str, head: dict, pipeline_args, commit) -> None:
    """Write `jobs` (this task's ShardJobs) on Beam with `pipeline_args` and wait for the
    pipeline. `head`: the task manifest without its shards (tfrecords.task_head; the runner's
    name is added to its options here); `commit(out_dir, head, receipts)` writes the task
    manifest and, when every task is done, manifest.json (tfrecords.commit_task: handed in, so
    that this module does not import tfrecords, which imports it)."""
    options = pipeline_options(pipeline_args)
    runner = options.view_as(beam.options.pipeline_options.StandardOptions).runner
    try:  # Beam checks the runner's name and options here, before anything is written
        pipeline = beam.Pipeline(options=options)
    except ValueError as error:
        raise ConfigError(f"Beam pipeline options after `--`: {error}") from error
    head = dict(head, options=dict(head["options"], runner=str(runner)))
    path = jobs_file(out_dir, head["split"], head["task_index"], head["num_tasks"])
    spans = write_jobs(path, head, jobs)
    elements = [(job.file, *span) for job, span in zip(jobs, spans[1:], strict=True)]
    files = [job.file for job in jobs]
    images = sum(len(job.ids) for job in jobs)
    print(f"beam: {len(jobs)} shards, {images} images, runner {runner}", flush=True)
    with pipeline:
        (
            pipeline
            | "Shards" >> beam.Create(elements)
            | "Spread" >> beam.Reshuffle()
            | "WriteShard" >> beam.ParDo(WriteShardFn(path))
            | "AllReceipts" >> beam.combiners.ToList()
            | "Commit" >> beam.ParDo(CommitFn(out_dir, path, spans[0], files, commit))
        )
