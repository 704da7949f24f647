"""The bar on mini-landmarks' unseen landmarks: retrieval mAP@100 of the backbone's own GeM
features (pretrained, no head, nothing trained), without training anything.

Builds the demo preset's backbone GeM model (`landmarks.models.build.build_backbone_gem`, the
model `python -m landmarks demo` scores as `_backbone_gem`), embeds test/ and index/ only and
scores the retrieval submission against retrieval_solution.csv (seen landmarks) and
retrieval_solution_unseen.csv: the demo's `map@100_backbone_gem` and
`map@100_unseen_backbone_gem` in a fraction of the demo's time (no training, no train split).

    .venv/bin/python bench/unseen_bar.py [--out output/unseen_bar] [--set image_size=192 ...]

Prints one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from landmarks.config import Config
from landmarks.data.demo import MARKER, UNSEEN_SOLUTION


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="output/unseen_bar")
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--data-dir", default="input/mini-landmarks")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    args = parser.parse_args()

    from landmarks.evaluation import evaluate_files
    from landmarks.inference.run import run_inference_tasks
    from landmarks.models.build import build_backbone_gem
    from landmarks.training.checkpoints import save_keras_atomic

    start = time.perf_counter()
    out = Path(args.out)
    config = Config.load(args.config, args.overrides)
    # the model checks ask for the classes a training run would have; GeM has no classifier
    summary = json.loads((Path(args.data_dir) / MARKER).read_text())
    config.update({"num_classes": summary["train_landmarks"]}, source="bench")
    model_path = out / "backbone_gem" / "embed_model.keras"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    save_keras_atomic(build_backbone_gem(config), str(model_path))
    config.update(
        {
            "data_dir": args.data_dir,
            "model_path": str(model_path),
            "output_dir": str(out),
            "run_name": "backbone_gem",
        },
        source="bench",
    )
    submission = out / "retrieval_submission.csv"
    run_inference_tasks(config, {"retrieval": str(submission)}, log=lambda _: None)
    data = Path(args.data_dir)
    scores = {
        f"map@100{suffix}_backbone_gem": evaluate_files(
            "retrieval", str(submission), str(data / solution)
        )["map@100"]
        for suffix, solution in (("", "retrieval_solution.csv"), ("_unseen", UNSEEN_SOLUTION))
    }
    scores["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(scores))


if __name__ == "__main__":
    main()
