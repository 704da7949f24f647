"""Train-step cost of the DOLG and GeM heads relative to the backbone alone.

Builds, in one process, the training model of the same backbone (EfficientNetB0 by default,
weights=None) with three heads: "avg" (backbone only: global average pool + Dense to the
embedding + sub-center ArcFace: the reference), "gem", "dolg" (at each --local-dims
value) and "fbsd" (FBSM-rewired backbone, three-stage FBSD head, four ArcFace classifiers), plus
the "dolg" head on each --compare-backbones backbone (e.g. conformer_ti), still relative to
"avg" on the reference backbone. Each model trains on one fixed batch; warm-up steps (tracing included) are excluded,
and rounds are interleaved across models so that load changes on a shared machine hit them
all alike. The per-step time is the median over rounds.

Prints one line per model and size, then, as the last line, one JSON object of ratios
`{"<head>@<size>": step_time / avg_step_time}` (1.20 = the head adds 20% to the step).

    .venv/bin/python bench/model.py [--sizes 128 256] [--batch 8] [--steps 2] [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from sources import random_batch

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="efficientnet_b0")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--local-dims", type=int, nargs="+", default=[512, 256])
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--compare-backbones", nargs="*", default=["conformer_ti"])
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    from landmarks.config import Config
    from landmarks.models.build import build_model

    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    variants = [(args.backbone, "avg", None), (args.backbone, "gem", None)]
    variants += [(args.backbone, "dolg", d) for d in args.local_dims]
    variants += [(args.backbone, "fbsd", None)]
    variants += [(b, "dolg", 512) for b in args.compare_backbones]
    ratios = {}
    for size in args.sizes:
        rng = np.random.default_rng(0)
        batch = random_batch(rng, args.batch, size, args.num_classes)
        models = {}
        for backbone, head, local_dim in variants:
            name = head if local_dim is None else f"{head}{local_dim}"
            if backbone != args.backbone:
                name = f"{backbone}+{name}"
            config = Config(
                backbone=backbone,
                head=head,
                image_size=size,
                num_classes=args.num_classes,
                local_dim=local_dim or 512,
                dynamic_margins=False,
            )
            keras.utils.set_random_seed(0)
            train_model, _ = build_model(config)
            train_model.compile(
                optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                jit_compile=False,
            )
            targets = batch["label"]
            if isinstance(train_model.output, dict):  # fbsd: one logits output per classifier
                targets = {key: batch["label"] for key in train_model.output}
            for _ in range(args.warmup):
                train_model.train_on_batch(batch, targets)
            models[name] = (train_model, targets)
        times = {name: [] for name in models}
        for _ in range(args.rounds):
            for name, (model, targets) in models.items():
                start = time.perf_counter()
                for _ in range(args.steps):
                    model.train_on_batch(batch, targets)
                times[name].append((time.perf_counter() - start) / args.steps)
        reference = statistics.median(times["avg"])
        for name, values in times.items():
            step = statistics.median(values)
            params = models[name][0].count_params()
            print(
                f"{device} {args.backbone} {size}px batch {args.batch}: {name:8s} "
                f"{step * 1000:8.1f} ms/step  {params / 1e6:6.2f} M params  "
                f"x{step / reference:.3f} of avg",
                flush=True,
            )
            if name != "avg":
                ratios[f"{name}@{size}"] = round(step / reference, 3)
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
