"""Mini-landmarks GAP and mAP@100 of two demo models, their ensembles and each re-ranking option.

1. Trains two demo models (`python -m landmarks demo --set seed=S`, configs/demo.yaml, each in
   its own process and folder: out/seed<S>/); `--reuse` keeps models already trained there.
2. Runs inference variants in this process, in one run folder (out/infer/) whose embedding
   cache every variant shares, so each model embeds each split once:

       A, B                 each model alone (a one-member ensemble = the single model)
       A+B concat           weighted concatenation (weights 1, 1), one kNN
       A+B average          mean of the two models' similarities
       then on A+B concat and on A alone, each retrieval re-ranking:
       qe                   alpha-QE + DBA (alpha 3, 2 neighbours)
       label                hard label re-ranking (Yokoo et al. 2019)
       soft                 the 2021 winner's soft label re-ranking (bonus 1, penalty 0.1)
       bridged              the 2021 5th place's bridged distances (1 - d confidences)
       bridged-inverse      the same with 1/d confidences
       qe+bridged           DBA/QE then bridged (the 5th place's combination)

   Test and index images come from the data folder; both models embed the train records of the
   first seed's run (the same images and order for every member). The demo has no separate
   non-landmark photo set, so the non-landmark penalty is off throughout. Re-ranking changes
   only retrieval: GAP is the same in every re-ranking row of a base.

Prints one line per variant and, as the last line, one JSON object {variant: {"gap", "map@100"}}
plus the ratios of each re-ranked/ensembled mAP@100 to the best single model's.

    .venv/bin/python bench/ensemble.py [--out output/bench_ensemble] [--seeds 42 1]
        [--set epochs=2 ...] (overrides for both demo trainings) [--reuse]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RERANKS = {
    "qe": {"query_expansion_alpha": 3.0, "query_expansion_k": 2},
    "label": {"retrieval_rerank": "label"},
    "soft": {"retrieval_rerank": "soft"},
    "bridged": {"retrieval_rerank": "bridged"},
    "bridged-inverse": {"retrieval_rerank": "bridged", "bridged_confidence": "inverse"},
    "qe+bridged": {"retrieval_rerank": "bridged", "query_expansion_alpha": 3.0},
}


def train_models(args) -> list[Path]:
    """Run folders of the trained demo models, one per seed."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "NO_ALBUMENTATIONS_UPDATE": "1"}
    folders = []
    for seed in args.seeds:
        out = Path(args.out) / f"seed{seed}"
        model = out / "run" / "embed_model.keras"
        if not (args.reuse and model.is_file()):
            command = [sys.executable, "-m", "landmarks", "demo", "--out", str(out)]
            command += [
                "--config",
                args.config,
                "--data-dir",
                args.data_dir,
                "--set",
                f"seed={seed}",
            ]
            for item in args.overrides:
                command += ["--set", item]
            start = time.perf_counter()
            subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
            print(f"trained seed {seed} in {time.perf_counter() - start:.0f} s", flush=True)
        folders.append(out)
    return folders


def variants(members: list[dict]) -> dict[str, dict]:
    """Name -> config keys of every inference variant (see the module docstring)."""
    first, second = members
    both = {"ensemble": [first, second]}
    table = {
        "A": {"ensemble": [first]},
        "B": {"ensemble": [second]},
        "A+B concat": {**both, "ensemble_mode": "concat"},
        "A+B average": {**both, "ensemble_mode": "average"},
    }
    for name, keys in RERANKS.items():
        table[f"A+B concat {name}"] = {**both, "ensemble_mode": "concat", **keys}
    for name, keys in RERANKS.items():
        table[f"A {name}"] = {"ensemble": [first], **keys}
    return table


def score(config, out: Path) -> dict:
    """GAP and mAP@100 of the variant `config`, submissions written under `out`."""
    from landmarks.evaluation import evaluate_files
    from landmarks.inference.run import run_inference_tasks

    outputs = {"recognition": str(out / "recognition.csv"), "retrieval": str(out / "retrieval.csv")}
    run_inference_tasks(config, outputs, log=lambda line: None)
    data = Path(config.data_dir)
    gap = evaluate_files(
        "recognition", outputs["recognition"], str(data / "recognition_solution.csv")
    )
    mean_ap = evaluate_files(
        "retrieval", outputs["retrieval"], str(data / "retrieval_solution.csv")
    )
    return {"gap": round(gap["gap"], 4), "map@100": round(mean_ap["map@100"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="output/bench_ensemble")
    parser.add_argument("--seeds", nargs=2, type=int, default=[42, 1], metavar="SEED")
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--data-dir", default="input/mini-landmarks")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument("--reuse", action="store_true", help="keep models already trained in --out")
    args = parser.parse_args()

    from landmarks.config import Config

    folders = train_models(args)
    base = Config.load(str(folders[0] / "run" / "config.yaml"))
    base.update(
        {"output_dir": str(Path(args.out) / "infer"), "run_name": "bench", "model_path": ""},
        source="bench",
    )
    members = [
        {"name": f"seed{seed}", "model_path": str(folder / "run" / "embed_model.keras")}
        for seed, folder in zip(args.seeds, folders, strict=True)
    ]
    results = {}
    for name, keys in variants(members).items():
        config = Config.from_dict({**base.to_dict(), **keys}, source="bench")
        out = Path(args.out) / "infer" / name.replace(" ", "_").replace("+", "-")
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        results[name] = score(config, out)
        print(
            f"{name:26s} GAP {results[name]['gap']:.4f}  mAP@100 {results[name]['map@100']:.4f}"
            f"  {time.perf_counter() - start:5.1f} s",
            flush=True,
        )
    best_single = max(results["A"]["map@100"], results["B"]["map@100"])
    summary = dict(results)
    if best_single > 0:
        for name, values in results.items():
            if name not in ("A", "B"):
                summary[f"{name} map/best_single"] = round(values["map@100"] / best_single, 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
