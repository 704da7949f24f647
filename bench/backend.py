"""Train step and embedding throughput of the same model on Keras' JAX and TensorFlow backends.

The backend is fixed per process, so this script runs one child process per backend (one after
the other, `--repeats` times alternating, to spread load changes on a shared machine over both)
on identical inputs: EfficientNetB0 (weights None) + DOLG (local_dim 512) + sub-center ArcFace
(1000 classes), the project's AdamW with the backbone multiplier and the float32 ArcFace loss,
as `train` compiles it for the device: on the CPU TensorFlow runs without XLA (the project's
default there) and JAX with it (JAX always compiles). `--tf-xla` adds TensorFlow with
jit_compile=True, to tell XLA's own CPU cost from JAX's.

Per size: the train step (median over rounds of `--steps` steps after `--warmup` steps; the
first step, tracing and compiling included, is reported apart) and the embedding throughput
(embed model through landmarks.inference.forward.compiled_forward, images/s over `--embed-batches`
batches of `--embed-batch`).

Prints one line per backend and measure, then, as the last line, one JSON object of ratios
`{"jax_train_speed_over_tf@128": tf_step / jax_step, "jax_embed_speed_over_tf@128": ...}`
(>= 0.9 is the goal: JAX at least 0.9x TensorFlow's speed).

    .venv/bin/python bench/backend.py [--sizes 128 256] [--batch 8] [--repeats 1] [--tf-xla]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from sources import random_batch

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def measure(args) -> dict:
    """In a child process whose backend is fixed: {size: {"train_step", "first_step",
    "embed_images_per_s"}} in seconds and images per second."""
    import keras
    import numpy as np

    from landmarks.config import Config
    from landmarks.inference.forward import compiled_forward
    from landmarks.models.build import build_model
    from landmarks.training.optimization import (
        ArcFaceCrossEntropy,
        exclude_vectors_from_decay,
        make_optimizer,
        make_schedule,
    )
    from landmarks.training.trainer import backbone_variables

    results = {}
    for size in args.sizes:
        rng = np.random.default_rng(0)
        batch = random_batch(rng, args.batch, size, args.num_classes)
        config = Config(image_size=size, num_classes=args.num_classes, dynamic_margins=False)
        keras.utils.set_random_seed(0)
        train_model, embed_model = build_model(config)
        optimizer = make_optimizer(
            "adamw",
            make_schedule(1e-3, 1000, 10, 1e-6),
            weight_decay=1e-4,
            clip_norm=10.0,
            backbone_variables=backbone_variables(train_model),
            backbone_lr_multiplier=0.1,
        )
        exclude_vectors_from_decay(optimizer, train_model.trainable_variables)
        train_model.compile(
            optimizer=optimizer, loss=ArcFaceCrossEntropy(), jit_compile=args.jit_compile
        )
        start = time.perf_counter()
        train_model.train_on_batch(batch, batch["label"])
        first = time.perf_counter() - start
        for _ in range(args.warmup):
            train_model.train_on_batch(batch, batch["label"])
        rounds = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            for _ in range(args.steps):
                train_model.train_on_batch(batch, batch["label"])
            rounds.append((time.perf_counter() - start) / args.steps)

        forward = compiled_forward(embed_model)
        images = rng.uniform(0, 255, (args.embed_batch, size, size, 3)).astype("float32")
        forward(images)  # trace / compile
        start = time.perf_counter()
        for _ in range(args.embed_batches):
            forward(images)
        embed_rate = args.embed_batch * args.embed_batches / (time.perf_counter() - start)
        results[size] = {
            "train_step": statistics.median(rounds),
            "first_step": first,
            "embed_images_per_s": embed_rate,
        }
    return results


def run_child(backend: str, jit_compile: bool, args) -> dict:
    command = [sys.executable, __file__, "--child", "--jit-compile", str(jit_compile)]
    for name in ("batch", "steps", "rounds", "warmup", "num_classes", "embed_batch"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    command += ["--embed-batches", str(args.embed_batches), "--sizes", *map(str, args.sizes)]
    env = dict(os.environ, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{backend} child failed:\n{result.stderr[-3000:]}")
    return {int(k): v for k, v in json.loads(result.stdout.strip().splitlines()[-1]).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--embed-batch", type=int, default=32)
    parser.add_argument("--embed-batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs per backend")
    parser.add_argument("--tf-xla", action="store_true", help="also TensorFlow with XLA")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--jit-compile", default="False", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.jit_compile = args.jit_compile == "True"
        print(json.dumps(measure(args)))
        return

    variants = [("tensorflow", False), ("jax", True)] + ([("tensorflow", True)] * args.tf_xla)
    runs = {variant: [] for variant in variants}
    for _ in range(args.repeats):
        for variant in variants:
            runs[variant].append(run_child(*variant, args))
    summary = {}
    for (backend, jit), results in runs.items():
        name = backend if backend == "jax" or not jit else "tensorflow-xla"
        for size in args.sizes:
            step = statistics.median(r[size]["train_step"] for r in results)
            first = statistics.median(r[size]["first_step"] for r in results)
            rate = statistics.median(r[size]["embed_images_per_s"] for r in results)
            summary[name, size] = (step, rate)
            print(
                f"{name:14s} {size}px batch {args.batch}: train step {step * 1000:8.1f} ms "
                f"(first step {first:6.1f} s), embed {rate:7.1f} images/s "
                f"(batch {args.embed_batch})",
                flush=True,
            )
    ratios = {}
    for size in args.sizes:
        tf_step, tf_rate = summary["tensorflow", size]
        for name in ("jax", "tensorflow-xla"):
            if (name, size) not in summary:
                continue
            step, rate = summary[name, size]
            prefix = "jax" if name == "jax" else "tf_xla"
            ratios[f"{prefix}_train_speed_over_tf@{size}"] = round(tf_step / step, 3)
            ratios[f"{prefix}_embed_speed_over_tf@{size}"] = round(rate / tf_rate, 3)
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
