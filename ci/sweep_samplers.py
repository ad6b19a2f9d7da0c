"""Sampler settings of the masked and next-scale priors, compared on the shipped full-budget checkpoints.

Each setting draws class-conditional samples as the leaderboard does (100 per digit by default, in batches of 500
from one generator) from the same shipped models, once per seed, and scores them with `argen_lit.eval.evaluate_seeds`;
one markdown table per paradigm. Seed 0 is the leaderboard's own draw; the other seeds show how much of a
difference is sampling noise. This is how `MASKED_SAMPLER` and `NEXT_SCALE_SAMPLER` were chosen. Usage:

    python ci/sweep_samplers.py [--paradigms masked,next_scale] [--n 1000] [--seeds 0,1] [--run runs/leaderboard/pretrained]
"""
import argparse
from dataclasses import replace
from pathlib import Path
import torch
from argen_lit import masked, next_scale
from argen_lit.eval import evaluate_seeds
from argen_lit.leaderboard import PARADIGMS, PRETRAINED, install_pretrained
from argen_lit.recipes import load_data

GRIDS = {  # paradigm -> (the exported sampler dict the recipe reads at call time, settings tried)
    "masked": (masked.MASKED_SAMPLER, [
        dict(steps=8, cfg_scale=5.0), dict(steps=8, cfg_scale=5.0, noise=2.0), dict(steps=16, cfg_scale=5.0),
        dict(steps=12, cfg_scale=5.0, noise=2.0), dict(steps=12, cfg_scale=3.0, noise=2.0)]),
    "next_scale": (next_scale.NEXT_SCALE_SAMPLER, [
        dict(cfg_scale=3.0), dict(cfg_scale=3.0, temperature=0.8), dict(cfg_scale=3.0, temperature=0.7),
        dict(cfg_scale=3.0, top_k=50), dict(cfg_scale=3.0, top_p=0.8), dict(cfg_scale=3.0, top_p=0.7),
        dict(cfg_scale=2.0, top_p=0.8), dict(cfg_scale=4.0, top_p=0.8), dict(cfg_scale=3.0, top_p=0.6),
        dict(cfg_scale=3.0, top_p=0.5), dict(cfg_scale=4.0, top_p=0.6), dict(cfg_scale=3.0, temperature=0.8, top_p=0.7)]),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paradigms", default=",".join(GRIDS))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--only", default="", help="indices into the grid, e.g. 0,5 (default: all)")
    ap.add_argument("--run", default="runs/leaderboard/pretrained")
    a = ap.parse_args()
    run = Path(a.run); install_pretrained(run)
    data = load_data(replace(PRETRAINED, aug_copies=1))  # loading trains nothing: no augmented copies needed
    labels = torch.arange(10).repeat_interleave(a.n // 10)
    for name in a.paradigms.split(","):
        sampler, grid = GRIDS[name]
        chosen = dict(sampler)
        contender = PARADIGMS[name](PRETRAINED, data, run, "cpu")
        print(f"\n{name}, {a.n} samples per seed (exported: {chosen})\n\n| setting | seed | class acc. | FID | precision | "
              "recall | s |\n|---|---:|---:|---:|---:|---:|---:|")
        picked = [grid[int(i)] for i in a.only.split(",")] if a.only else grid
        try:
            for setting in picked:
                sampler.clear(); sampler.update(setting)
                m = evaluate_seeds(contender.sample, labels, [int(x) for x in a.seeds.split(",")], batch_size=500, device="cpu")
                for r in m["per_seed"]:
                    print(f"| {setting} | {r['seed']} | {100 * r['class_accuracy']:.1f}% | {r['fid']:.2f} | {r['precision']:.3f} | "
                          f"{r['recall']:.3f} | {r['sample_seconds']:.0f} |", flush=True)
        finally: sampler.clear(); sampler.update(chosen)


if __name__ == "__main__":
    main()
