"""Mini-landmarks GAP of the heads and backbones on the same demo budget.

Runs the whole demo flow (`python -m landmarks demo`: records -> train with configs/demo.yaml ->
kNN submission -> GAP and mAP@100, for the trained and the untrained network) once per variant,
changing only the head or the backbone with `--set`, each in its own process and output folder:

    dolg               head: dolg on the demo backbone (the reference)
    gem                head: gem (global-only ablation)
    fbsd               head: fbsd (FBSM-rewired backbone, FBSD head, four ArcFace classifiers),
                       widths 128/256 like the demo's lightened DOLG
    conformer_ti       backbone: conformer_ti with head: dolg

Prints one line per variant, then, as the last line, one JSON object: each variant's GAP and
mAP@100 and its GAP relative to dolg (`"fbsd/dolg": 1.10` = 10% more GAP than DOLG).

    .venv/bin/python bench/heads_gap.py [--variants dolg fbsd] [--out output/heads_gap]
        [--set epochs=2 ...]   (extra overrides applied to every variant)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    "dolg": ["head=dolg"],
    "gem": ["head=gem"],
    # lightened like the demo's DOLG (local_dim 128 instead of 512): 128/256 instead of 512/1024
    "fbsd": ["head=fbsd", "fbsd_mid_dim=128", "fbsd_part_dim=256"],
    "conformer_ti": ["backbone=conformer_ti", "head=dolg"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--out", default="output/heads_gap", help="one sub-folder per variant")
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--data-dir", default="input/mini-landmarks")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    args = parser.parse_args()

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "NO_ALBUMENTATIONS_UPDATE": "1"}
    results = {}
    for name in args.variants:
        out = Path(args.out) / name
        command = [sys.executable, "-m", "landmarks", "demo", "--out", str(out)]
        command += ["--config", args.config, "--data-dir", args.data_dir]
        for item in VARIANTS[name] + args.overrides:
            command += ["--set", item]
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        metrics = json.loads((out / "metrics.json").read_text())
        results[name] = metrics
        print(
            f"{name:13s} GAP {metrics['gap']:.4f} (untrained {metrics['gap_untrained']:.4f})  "
            f"mAP@100 {metrics['map@100']:.4f}  {seconds:.0f} s  [{' '.join(VARIANTS[name])}]",
            flush=True,
        )
    summary = {}
    for name, metrics in results.items():
        summary[f"gap_{name}"] = round(metrics["gap"], 4)
        summary[f"map@100_{name}"] = round(metrics["map@100"], 4)
    if "dolg" in results and results["dolg"]["gap"] > 0:
        for name in results:
            if name != "dolg":
                summary[f"{name}/dolg"] = round(results[name]["gap"] / results["dolg"]["gap"], 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
