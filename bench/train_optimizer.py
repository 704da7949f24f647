"""Train-step cost of the backbone learning-rate multiplier (landmarks.training.optimization).

Builds, in one process, two copies of the same training model (EfficientNetB0 by default,
weights=None, GeM head, 128 px) and compiles one with Keras' AdamW (the reference) and the other
with BackboneScaledAdamW (backbone rate x 0.1, its decoupled decay scaled alike); both with the
same warmup-cosine schedule and global-norm clipping. Each trains on one fixed batch with
`train_on_batch`; warm-up steps (tracing included) are excluded and rounds alternate between
the two so that load changes on a shared machine hit both alike. Per-step time is the median
over rounds.

Prints one line per optimizer, then, as the last line, one JSON object of ratios
`{"backbone_scaled_adamw": step_time / adamw_step_time}` (1.00 = no cost).

    .venv/bin/python bench/train_optimizer.py [--size 128] [--batch 8] [--steps 3] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="efficientnet_b0")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--num-classes", type=int, default=1000)
    args = parser.parse_args()

    import keras
    import numpy as np

    from landmarks.config import Config
    from landmarks.models.build import build_model
    from landmarks.training.optimization import ArcFaceCrossEntropy, make_optimizer, make_schedule
    from landmarks.training.trainer import backbone_variables

    config = Config(
        backbone=args.backbone, head="gem", image_size=args.size, num_classes=args.num_classes
    )
    rng = np.random.default_rng(0)
    x = {
        "image": rng.uniform(0, 255, (args.batch, args.size, args.size, 3)).astype("float32"),
        "label": rng.integers(0, args.num_classes, args.batch).astype("int32"),
    }
    y = x["label"]

    models = {}
    for name in ("adamw", "backbone_scaled_adamw"):
        keras.utils.set_random_seed(0)
        model, _ = build_model(config)
        schedule = make_schedule(1e-3, 1000, 100, 1e-6)
        if name == "adamw":
            optimizer = keras.optimizers.AdamW(schedule, weight_decay=1e-4, global_clipnorm=10.0)
        else:
            optimizer = make_optimizer(
                "adamw",
                schedule,
                weight_decay=1e-4,
                clip_norm=10.0,
                backbone_variables=backbone_variables(model),
                backbone_lr_multiplier=0.1,
            )
        model.compile(optimizer=optimizer, loss=ArcFaceCrossEntropy(), jit_compile=False)
        for _ in range(args.warmup):
            model.train_on_batch(x, y)
        models[name] = model

    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                model.train_on_batch(x, y)
            times[name].append((time.perf_counter() - start) / args.steps)

    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        print(
            f"{name}: {value * 1000:.1f} ms/step ({args.backbone}, {args.size} px, batch {args.batch})"
        )
    ratio = medians["backbone_scaled_adamw"] / medians["adamw"]
    print(json.dumps({"backbone_scaled_adamw": round(ratio, 3)}))


if __name__ == "__main__":
    main()
