"""Data-parallel training speed measured side by side in one run: `argen-lit train` as one process, then the same
recipe under torchrun as N processes (gloo on CPU, NCCL on GPUs), with the same global batch.

For each model the recipe trains it prints the median images/s (rows of the global batch per second, from the step
logs, the first 10 steps left out as warm-up), the ratio N processes / one, and the largest per-step difference of
the logged loss. On a 2-core machine one process uses both cores through its threads, and each of 2 processes one
(torchrun sets OMP_NUM_THREADS=1), so the ratio says what the process split costs or gains, not what a second
machine would add. Usage: `python ci/bench_ddp.py [--paradigm vq] [--budget quick] [--steps 200] [--nproc 2] [--repeats 2]`.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time
from pathlib import Path

LAUNCH = [sys.executable, "-c", "import sys; from argen_lit.cli import main; sys.exit(main())"]  # argen-lit, wherever it is


def train(out_dir: Path, paradigm: str, budget: str, steps: int, nproc: int, device: str, torchrun: bool) -> float:
    "Run `argen-lit train`, plain or under torchrun with `nproc` processes; returns its wall seconds."
    cmd = [*LAUNCH, "train", paradigm, "--budget", budget, "--steps", str(steps), "--out-dir", str(out_dir), "--device", device]
    if torchrun:  # on one GPU too: the NCCL path is then what is measured
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "--no-python", *cmd]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if r.returncode: raise RuntimeError(f"{' '.join(cmd[-12:])} failed:\n{r.stderr[-3000:]}")
    return time.time() - t0


def logs(run: Path) -> dict:
    "model -> its step log rows."
    return {p.stem: [json.loads(line) for line in p.read_text().splitlines()] for p in sorted((run / "logs").glob("*.jsonl"))}


def compare(out: Path, paradigm: str = "vq", budget: str = "quick", steps: int = 200, nproc: int = 2, device: str = "cpu",
            repeats: int = 1) -> dict:
    """One process, then `nproc` under torchrun, on the same recipe, `repeats` times in turn (a shared machine drifts:
    pairs side by side, and their spread, say more than one long run of each). Per model: median images/s of each,
    their ratio (and each pair's), the largest per-step loss gap of the first pair."""
    name, rates, seconds, first = f"{budget}-steps{steps}", {}, {"one": [], "many": []}, None
    rate = lambda rows: statistics.median(r["items_per_s"] for r in rows[10:] or rows)
    for k in range(repeats):
        one_dir, many_dir = out / f"one{k}", out / f"n{nproc}-{k}"
        seconds["one"].append(train(one_dir, paradigm, budget, steps, 1, device, torchrun=False))
        seconds["many"].append(train(many_dir, paradigm, budget, steps, nproc, device, torchrun=True))
        a, b = logs(one_dir / name), logs(many_dir / name)
        first = first or (a, b, json.loads((many_dir / name / f"train_{paradigm}.json").read_text())["weights_agree"])
        for model in a: rates.setdefault(model, []).append((rate(a[model]), rate(b[model])))
    a, b, agree = first
    rows = []
    for model, pairs in rates.items():
        one, many = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
        rows.append({"model": model, "steps": len(a[model]), "one_images_per_s": one, "n_images_per_s": many, "ratio": many / one,
                     "pair_ratios": [round(p[1] / p[0], 3) for p in pairs],
                     "max_loss_gap": max(abs(x["loss"] - y["loss"]) for x, y in zip(a[model], b[model])),
                     "final_loss_one": a[model][-1]["loss"], "final_loss_n": b[model][-1]["loss"]})
    return {"paradigm": paradigm, "budget": budget, "steps": steps, "nproc": nproc, "device": device, "repeats": repeats,
            "rows": rows, "wall_seconds": {k: statistics.median(v) for k, v in seconds.items()}, "weights_agree": agree}


def report(r: dict) -> str:
    lines = [f"{r['paradigm']} at budget {r['budget']}, {r['steps']} prior steps, 1 process vs {r['nproc']} ({r['device']}), "
             f"{r['repeats']} pair(s) in turn; median wall {r['wall_seconds']['one']:.0f} s vs {r['wall_seconds']['many']:.0f} s; weights identical on every process: {r['weights_agree']}",
             "| model | steps | images/s, 1 process | images/s, N | ratio N/1 | each pair | largest loss gap | final loss 1 / N |",
             "|---|---:|---:|---:|---:|---|---:|---|"]
    lines += [f"| {x['model']} | {x['steps']} | {x['one_images_per_s']:.0f} | {x['n_images_per_s']:.0f} | {x['ratio']:.2f}x | "
              f"{', '.join(f'{r:.2f}' for r in x['pair_ratios'])} | "
              f"{x['max_loss_gap']:.4f} | {x['final_loss_one']:.4f} / {x['final_loss_n']:.4f} |" for x in r["rows"]]
    return "\n".join(lines)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--paradigm", default="vq"); p.add_argument("--budget", default="quick")
    p.add_argument("--steps", type=int, default=200); p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--device", default="cpu"); p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(report(compare(Path(tmp), a.paradigm, a.budget, a.steps, a.nproc, a.device, a.repeats)))
