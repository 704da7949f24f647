"""A run stopped after epoch 1 and resumed trains exactly as the uninterrupted run: the same
losses, validation GAP and final weights, in float32 with dropout and augmentation (their random
state is a function of seed and epoch) and in mixed_float16 (the loss scale is restored), on
both backends. Test of the test: a restore that swaps two same-shaped variables or leaves an
Adam moment fresh makes the resumed run's results differ beyond the tolerance.

In-process runs of the tests' tiny_bn model (tests/training_helpers.py), so the same kernels run
on both sides and the comparison can be tight. Resumes across processes, device counts and
backends are compared in tests/test_training.py, tests/test_jax_devices.py and
tests/test_cross_backend.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from training_helpers import STEPS, checkpoint_arrays, history_differences, read_history, tiny

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("tiny_bn_registered")]

# Same process, same kernels, same batches: float32 sums in the same order, so the resumed
# run's numbers equal the uninterrupted run's up to nothing; the bound leaves room for a
# summation-order change only.
LOSS_RTOL = 1e-6
WEIGHT_ATOL = 1e-6
RUNS = {
    # two steps per execution: an epoch is two whole executions
    "float32": {"dropout": 0.3, "augment": "tf", "steps_per_execution": 2},
    "mixed_float16": {"precision": "mixed_float16"},
}


def _config(records: Path, out: Path, precision: str, **changes):
    return tiny(records, out, epochs=2, validate_every=1, **RUNS[precision], **changes)


@pytest.fixture(scope="module", params=sorted(RUNS))
def runs(request, mini_records, tmp_path_factory):
    """(precision, uninterrupted run folder, a run folder stopped after epoch 1)."""
    from landmarks.training.trainer import train

    previous = keras.config.dtype_policy()
    out = tmp_path_factory.mktemp(f"resume-{request.param}")
    try:
        reference = train(_config(mini_records, out / "reference", request.param), verbose=0)
        stopped = _config(mini_records, out / "stopped", request.param, stop_after_epochs=1)
        stopped = train(stopped, verbose=0)
    finally:
        keras.config.set_dtype_policy(previous)
    return request.param, Path(reference), Path(stopped)


def _resume(runs, mini_records, out: Path) -> Path:
    """A copy of the stopped run, resumed to the end; its run folder."""
    from landmarks.training.trainer import train

    precision, _, stopped = runs
    shutil.copytree(stopped.parent, out)
    previous = keras.config.dtype_policy()
    try:
        run_dir = Path(train(_config(mini_records, out, precision), verbose=0))
    finally:
        keras.config.set_dtype_policy(previous)
    assert [int(row["epoch"]) for row in read_history(run_dir)] == [1, 2]
    return run_dir


def _differences(resumed: Path, reference: Path) -> list[str]:
    """What differs between two run folders beyond the tolerances: history losses and val GAP,
    then the final checkpoint's variables by path."""
    rows, expected = read_history(resumed), read_history(reference)
    assert [row["epoch"] for row in rows] == [row["epoch"] for row in expected]
    found = history_differences(rows, expected, loss_rtol=LOSS_RTOL)
    mine, theirs = checkpoint_arrays(resumed), checkpoint_arrays(reference)
    assert set(mine) == set(theirs)
    for path in sorted(mine):
        if not np.allclose(mine[path], theirs[path], rtol=0, atol=WEIGHT_ATOL):
            found.append(f"variable {path}")
    return found


@pytest.mark.backends
def test_a_resumed_run_equals_the_uninterrupted_run(runs, mini_records, tmp_path):
    precision, reference, _ = runs
    resumed = _resume(runs, mini_records, tmp_path / "resumed")
    assert _differences(resumed, reference) == []
    if precision == "float32":  # under mixed_float16 the loss scale skips overflowing steps
        steps = [int(row["step"]) for row in read_history(resumed)]
        assert steps == [STEPS, 2 * STEPS]  # 2 whole executions of 2 steps an epoch
    if precision == "mixed_float16":
        assert any(path.startswith("loss_scale:") for path in checkpoint_arrays(resumed))


@pytest.mark.parametrize("fault", ["swapped", "fresh"])
def test_a_faulty_restore_fails_the_comparison(runs, mini_records, tmp_path, monkeypatch, fault):
    """Test of the test: swap BatchNorm norm0's gamma and beta (same shape, so the restore's
    position-and-shape check passes) or leave the first Adam moment at zero; the resumed
    run's losses and weights then differ from the uninterrupted run's beyond the tolerances."""
    from landmarks.training import checkpoints

    if runs[0] != "float32":
        pytest.skip("one precision is enough for the control")
    original = checkpoints._assign

    def faulty(variables, saved, path, group):
        variables, saved = list(variables), list(saved)
        if group == "model" and fault == "swapped":
            names = [name for name, _ in saved]
            gamma = next(i for i, n in enumerate(names) if n.endswith("norm0/gamma"))
            beta = next(i for i, n in enumerate(names) if n.endswith("norm0/beta"))
            (gamma_path, gamma_value), (beta_path, beta_value) = saved[gamma], saved[beta]
            saved[gamma], saved[beta] = (gamma_path, beta_value), (beta_path, gamma_value)
        if group == "optimizer" and fault == "fresh":
            first = next(i for i, (name, _) in enumerate(saved) if "momentum" in name)
            del variables[first], saved[first]
        original(variables, saved, path, group)

    monkeypatch.setattr(checkpoints, "_assign", faulty)
    resumed = _resume(runs, mini_records, tmp_path / "resumed")
    monkeypatch.setattr(checkpoints, "_assign", original)
    differences = _differences(resumed, runs[1])
    assert any(d.startswith("epoch 2 loss") for d in differences), differences
    assert any(d.startswith("variable ") for d in differences), differences
