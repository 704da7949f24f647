"""Name the record that stopped a tf.data pipeline: its shard, its id and what is wrong.

When a shard is truncated or a stored JPEG does not decode, tf.data stops with a message that
names neither ("truncated record at 81234", "jpeg::Uncompress failed"). Training and embedding
run inside `naming_bad_records(files)`: on such an error it reads the shards again, one at a
time, to find the first bad one, and raises a DataError naming the shard, the offset TF gives
and the record's position and id. The search only runs after a failure; the happy path costs
nothing. Records written by `prepare` are checked when they are written (images.py refuses
JPEGs whose scan data TensorFlow cannot decode), so this catches shards damaged afterwards
(an interrupted copy or upload) and records written by older versions or other tools.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence

from landmarks.errors import DataError

# Messages of read and decode failures (anything else is re-raised untouched).
_READ_FAILURE = re.compile(
    r"jpeg|image|truncated record|corrupted record|data ?loss|checksum", re.IGNORECASE
)
REBUILD_HINT = "rebuild it with `python -m landmarks prepare` (the same command resumes)"


@contextlib.contextmanager
def naming_bad_records(files: Sequence[str], log=print) -> Iterator[None]:
    """Run the body; turn a read or decode failure of the records `files` into a DataError that
    names the bad shard and record (see the module docstring). Other errors pass unchanged."""
    import tensorflow as tf

    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
        if not files or not _READ_FAILURE.search(str(error.message)):
            raise
        log(f"a record could not be read; checking {len(files)} shard(s) to name it ...")
        problem = find_bad_record(files)
        if problem is None:
            raise
        raise DataError(problem) from error


def find_bad_record(files: Sequence[str]) -> str | None:
    """A one-line description of the first shard of `files` that cannot be read or holds a
    record whose image does not decode, or None when every record reads and decodes."""
    for shard in files:
        problem = shard_problem(shard)
        if problem is not None:
            return problem
    return None


def shard_problem(shard: str) -> str | None:
    """What is wrong with one shard (see find_bad_record), or None."""
    import tensorflow as tf

    from landmarks.data.tfrecords import parse_example

    ids: list[str] = []
    records = tf.data.TFRecordDataset(shard)
    try:
        for batch in records.map(lambda s: parse_example(s)["id"]).batch(1024):
            ids.extend(value.decode("utf-8") for value in batch.numpy())
    except tf.errors.NotFoundError:
        return f"{shard}: shard not found; {REBUILD_HINT}"
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
        return (
            f"{shard}: unreadable after record {len(ids)} ({_first_line(error)}); "
            f"the shard is truncated or damaged: {REBUILD_HINT}"
        )

    def decodable_id(serialized):
        record = parse_example(serialized)
        shape = tf.shape(tf.io.decode_jpeg(record["encoded"], channels=3))
        return record["id"], shape  # the shape keeps the decode in the graph

    readable = records.map(decodable_id).ignore_errors().batch(1024)
    decoded = {value.decode("utf-8") for batch, _ in readable for value in batch.numpy()}
    for position, record_id in enumerate(ids):
        if record_id not in decoded:
            return (
                f"{shard}: record {position} (id {record_id}) holds an image that does not "
                f"decode ({_decode_error(records, position)}); {REBUILD_HINT}"
            )
    return None


def _decode_error(records, position: int) -> str:
    """TensorFlow's message for decoding the image of record `position`."""
    import tensorflow as tf

    from landmarks.data.tfrecords import parse_example

    serialized = next(iter(records.skip(position).take(1)))
    try:
        tf.io.decode_jpeg(parse_example(serialized)["encoded"], channels=3)
    except tf.errors.InvalidArgumentError as error:
        return _first_line(error)
    return "decodes when read alone"


def _first_line(error) -> str:
    """TensorFlow's message without its function-node prefix and op suffix, first line only."""
    message = str(getattr(error, "message", error))
    message = re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:\w+\]", "", message).strip().splitlines()
    return message[0] if message else type(error).__name__
