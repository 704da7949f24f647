"""Mini-landmarks scores of the trained demo model mixed with the backbone's own GeM features.

After a demo run (`python -m landmarks demo --out OUT`), scores, for each weight w, the
inference ensemble of the trained embedding (weight 1 - w) and the backbone's GeM embedding
(weight w; OUT/backbone_gem/embed_model.keras, which the demo saved), concatenated as
landmarks.inference.ensemble describes: GAP and mAP@100 on the seen landmarks, mAP@100 on the
unseen ones and the real photographs found, as the demo counts them. Nothing is trained again;
each member embeds the images once (cached in OUT/mix/embeddings) and every weight reuses them.
w = 0 and w = 1 are the demo's own `map@100_unseen` and `map@100_unseen_backbone_gem`; a
weight found here goes into a run as `--set backbone_gem_weight=w` (landmarks.demo_flow).

    .venv/bin/python bench/unseen_mix.py --out output/demo [--weights 0.25 0.5 0.75]

Prints one line per weight, then, as the last line, one JSON object {weight: scores}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from landmarks.config import Config
from landmarks.data.demo import real_photo_queries
from landmarks.demo_flow import (
    found_real_photos,
    infer_and_score,
    read_unseen_truth,
    with_backbone_gem,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="output/demo", help="a finished demo's output folder")
    parser.add_argument("--weights", nargs="+", type=float, default=[0.25, 0.5, 0.75])
    args = parser.parse_args()
    out = Path(args.out)
    trained = Config.load(str(out / "run" / "config.yaml"))
    real = real_photo_queries(trained.data_dir)
    truth = read_unseen_truth(trained.data_dir)
    results = {}
    for weight in args.weights:
        trained.update({"backbone_gem_weight": weight}, source="bench")
        mixed = with_backbone_gem(trained, str(out / "backbone_gem" / "embed_model.keras"))
        mixed.update({"output_dir": str(out), "run_name": "mix"}, source="bench")
        folder = out / "mix" / f"w{weight:g}"
        folder.mkdir(parents=True, exist_ok=True)
        scores = infer_and_score(mixed, folder, log=lambda _: None)
        found = found_real_photos(folder, real, truth)
        scores["real_photos"] = sum(found.values())
        results[f"{weight:g}"] = scores
        print(
            f"w={weight:g}: GAP {scores['gap']:.4f}, mAP@100 {scores['map@100']:.4f}, "
            f"unseen mAP@100 {scores['map@100_unseen']:.4f}, real photographs "
            f"{scores['real_photos']}/{len(real)}",
            flush=True,
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
