"""One prepared command for a GPU window: every GPU claim of argen_lit measured in one run, one JSON + one markdown.

Steps (each timed; one that fails is recorded and the next one runs):
  1. cuda_tests      `pytest -m cuda`: paradigms train (bf16) and sample on CUDA, cache == teacher forcing, CUDA-graph
                     and compiled decoding == eager, the harness scores alike on CUDA and CPU
  2. decode          ms per token step at d=256, 8 layers, 197 tokens, batch 64, bf16: no cache, plain loop, `generate`,
                     StaticDecoder eager / compiled / CUDA graph (ci/bench_accel.py; target: at most 0.3 ms)
  3. train           training tokens/s of the same decoder at batch 256, bf16, compiled (ci/bench_transformer.py;
                     target: at least 4M tokens/s)
  4. next_scale      next-scale vs raster (vq) images/s at batches 1, 16 and 256 on the shipped checkpoints
  5. masked          MaskGIT (T = 8) vs raster images/s at the same batches
  6. speculative     plain, SJD and GSD on the shipped raster prior at batch 1: passes per image and images/s
  7. ddp             `argen-lit train vq --budget quick` as one process, then under torchrun on every GPU here (NCCL):
                     images/s of each model, the ratio, the largest loss gap, whether all ranks hold the same weights
                     (ci/bench_ddp.py; a dry run: 2 gloo processes on CPU)
Asked for by name only (`--steps long_recipes`):
     long_recipes    the models that are compute-bound on 2 CPU cores (pixels, bytes, next-scale) trained with the
                     full recipe for `--long-steps` steps (same sizes as the shipped checkpoints, so they can replace
                     them), scored like the leaderboard; checkpoints with their provenance under OUT/long/
     pixel_transformer  10_pixels' long recipe with the class at every position, for `--long-steps` steps: test
                     bits/dim and class accuracy at cfg 3 (targets 1.00 and 90%), under OUT/long/pixel_transformer

    python ci/gpu_check.py [--out DIR] [--minutes 8]    # needs CUDA; refuses to start without it
    python ci/gpu_check.py --dry-run [--out DIR]        # every step at tiny size on CPU (no CUDA graphs), about a minute
    python ci/gpu_check.py --steps long_recipes --long-steps 4000   # longer training for a GPU window
    python ci/gpu_check.py --steps pixel_transformer --long-steps 20000   # the pixel transformer's long recipe
    bash ci/gpu_check.sh                                # on the device machine: wheels from .whl/ if present, output to $OUT
"""
import argparse, datetime, json, re, subprocess, sys, time, traceback
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_accel, bench_ddp, bench_transformer  # noqa: E402  (the benchmarks this check runs at the GPU reference sizes)

TARGETS = {"decode_ms_per_step": 0.3, "train_tokens_per_s": 4e6}
TINY_MODEL = ["--d", "32", "--layers", "1", "--heads", "2", "--vocab", "64"]


def cuda_tests(ctx):
    "pytest -m cuda in a child process; counts of passed, skipped and failed tests."
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "cuda", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_cuda.py")]
    try: p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=ctx["left"]())
    except subprocess.TimeoutExpired as e:  # keep what it printed before the window closed
        (ctx["out"] / "cuda_tests.log").write_text(str(e.stdout or "") + str(e.stderr or ""))
        raise
    (ctx["out"] / "cuda_tests.log").write_text(p.stdout + p.stderr)
    last = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
    counts = {k.rstrip("s") if k.startswith("error") else k: int(n) for n, k in re.findall(r"(\d+) (passed|skipped|failed|errors?)", last)}
    ran_none = p.returncode == 5 and not ctx["dry"]  # on a GPU, "no tests collected" is a failure
    if (p.returncode not in (0, 5) or ran_none) and not counts.get("failed") and not counts.get("error"): counts["error"] = 1
    return {"returncode": p.returncode, **counts, "met": None if ctx["dry"] else (p.returncode == 0 and counts.get("passed", 0) > 0)}


def decode(ctx):
    size = TINY_MODEL + ["--tokens", "8", "--batch", "2", "--rounds", "1"] if ctx["dry"] else ["--batch", "64", "--tokens", "196"]
    rows = bench_accel.main(size + ["--compile", "--device", ctx["device"], "--out", str(ctx["out"] / "decode.json")])
    best = min(rows, key=lambda r: r["ms_per_step"])
    return {"rows": rows, "fastest": best["decoder"], "best_ms_per_step": best["ms_per_step"],
            "target_ms_per_step": TARGETS["decode_ms_per_step"],
            "met": None if ctx["dry"] else best["ms_per_step"] <= TARGETS["decode_ms_per_step"]}


def train(ctx):
    size = TINY_MODEL + ["--seq", "17", "--batch", "2", "--steps", "1", "--rounds", "1"] if ctx["dry"] else ["--batch", "256"]
    tf32 = torch.backends.cuda.matmul.allow_tf32  # the benchmark turns TF32 on; the later steps should not inherit it
    try: bench_transformer.main(size + ["--compile", "--device", ctx["device"], "--out", str(ctx["out"] / "train.json")])
    finally: torch.backends.cuda.matmul.allow_tf32 = tf32
    r = json.loads((ctx["out"] / "train.json").read_text())
    return {**r, "target_tokens_per_s": TARGETS["train_tokens_per_s"],
            "met": None if ctx["dry"] else r["tokens_per_s_shared"] >= TARGETS["train_tokens_per_s"]}


def contenders(ctx) -> dict:
    "The raster (vq), next-scale and masked contenders: shipped checkpoints, or smoke-trained ones in a dry run."
    if "contenders" not in ctx:
        from argen_lit.leaderboard import PARADIGMS, PRETRAINED, install_pretrained
        from argen_lit.recipes import get_budget, load_data
        b = get_budget("smoke") if ctx["dry"] else PRETRAINED
        run = ctx["out"] / ("models_smoke" if ctx["dry"] else "pretrained")
        if not ctx["dry"]: install_pretrained(run)
        data = load_data(replace(b, aug_copies=1))  # loading trains nothing; the smoke budget has one copy anyway
        ctx["contenders"] = {n: PARADIGMS[n](b, data, run, ctx["device"]) for n in ("vq", "next_scale", "masked")}
    return ctx["contenders"]


@contextmanager
def maskgit_steps(steps: int):
    "MaskGIT with `steps` decoding steps for the length of the block (the leaderboard's sampler uses 12)."
    from argen_lit.masked import MASKED_SAMPLER
    before = dict(MASKED_SAMPLER); MASKED_SAMPLER["steps"] = steps
    try: yield
    finally: MASKED_SAMPLER.clear(); MASKED_SAMPLER.update(before)


def images_per_s(c, batch: int, device: str, rounds: int) -> float:
    from argen_lit.core import make_generator
    labels = torch.arange(batch, device=device) % 10
    c.sample(labels, make_generator(0, device))  # warm-up: allocation, kernels, caches
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync(); t0 = time.perf_counter()
    for r in range(rounds): c.sample(labels, make_generator(r + 1, device))
    sync()
    return rounds * batch / (time.perf_counter() - t0)


def versus_raster(ctx, name: str):
    "images/s of `name` and of the raster prior at each batch, and their ratio."
    cs, rows = contenders(ctx), []
    for b in ctx["batches"]:
        with torch.no_grad():
            fast, raster = images_per_s(cs[name], b, ctx["device"], ctx["rounds"]), images_per_s(cs["vq"], b, ctx["device"], ctx["rounds"])
        rows.append({"batch": b, f"{name}_images_per_s": fast, "raster_images_per_s": raster, "ratio": fast / raster})
        print(f"  {name} vs raster, batch {b}: {fast:.1f} vs {raster:.1f} images/s ({fast / raster:.2f}x)", flush=True)
    return {"rows": rows, "best_ratio": max(r["ratio"] for r in rows), "met": None}


def next_scale(ctx): return versus_raster(ctx, "next_scale")


def masked(ctx):
    with maskgit_steps(8): return versus_raster(ctx, "masked")


def speculative(ctx):
    contenders(ctx)  # makes sure the raster prior's folders exist (vq_prior, vq_tokenizer)
    folder = ctx["out"] / ("models_smoke" if ctx["dry"] else "pretrained")
    size = TINY_MODEL + ["--tokens", "8", "--batch", "2", "--rounds", "1"] if ctx["dry"] else ["--batch", "2", "--tokens", "16"]
    bench_accel.main(size + ["--no-cache-row", "--prior", str(folder), "--spec-batch", "1", "--device", ctx["device"],
                             "--out", str(ctx["out"] / "speculative.json")])
    spec = json.loads((ctx["out"] / "speculative.json").read_text())["speculative"]
    return {"rows": spec, "met": None}


LONG = ("pixels", "bytes", "next_scale")  # the three models whose steps cost 3-6x more on 2 CPU cores


def long_recipes(ctx):
    "LONG trained with the full recipe for --long-steps steps (3 in a dry run, on the smoke recipe), then scored."
    from argen_lit.core import CONFIG_FILE, is_checkpoint, write_atomic
    from argen_lit.leaderboard import run_leaderboard
    from argen_lit.recipes import get_budget
    steps = min(ctx["long_steps"], 3) if ctx["dry"] else ctx["long_steps"]
    b = replace(get_budget("smoke" if ctx["dry"] else "full"), name=f"long_{steps}", steps=steps, slow_steps=None, seeds=1)
    records = run_leaderboard(b, list(LONG), out_dir=ctx["out"] / "long", device=ctx["device"])
    provenance = {"command": " ".join(["python", "ci/gpu_check.py", *sys.argv[1:]]), "commit": commit(), "torch": torch.__version__,
                  "device": ctx["device_name"], "budget": asdict(b),
                  "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    for folder in (ctx["out"] / "long" / b.name).iterdir():
        if is_checkpoint(folder):
            rec = json.loads((folder / CONFIG_FILE).read_text())
            rec["meta"].setdefault("provenance", provenance)  # a folder loaded from an earlier run keeps its own
            write_atomic(folder / CONFIG_FILE, json.dumps(rec, indent=2))
    keep = ("fid", "class_accuracy", "class_accuracy_low", "class_accuracy_high", "bits_per_dim", "train_seconds")
    return {"budget": asdict(b), "rows": [{"paradigm": r["paradigm"], **{k: r["metrics"].get(k) for k in keep}} for r in records],
            "met": None}


def pixel_transformer(ctx):
    """The pixel transformer's long recipe (10_pixels: LONG_RECIPE, the class at every position) for --long-steps steps,
    then test bits/dim and class accuracy at cfg 3 (1,000 samples; 20 digits and 10 samples in a dry run)."""
    from argen_lit.eval import evaluate
    from argen_lit.core import make_generator
    from argen_lit.data import load_mnist5k
    from argen_lit.pixels import dataset_bits_per_dim, sample_raster, train_long_recipe
    steps = min(ctx["long_steps"], 3) if ctx["dry"] else ctx["long_steps"]
    t0 = time.time()
    model = train_long_recipe(ctx["out"] / "long" / "pixel_transformer", steps=steps, device=ctx["device"], class_every_position=True)
    seconds = time.time() - t0
    xte, yte = load_mnist5k("test")
    n_test, n_samples = (20, 10) if ctx["dry"] else (len(xte), 1000)
    bpd = dataset_bits_per_dim(model, xte[:n_test], yte[:n_test])
    labels = torch.arange(n_samples) % 10
    samples = torch.cat([sample_raster(model, labels[i:i + 500].to(ctx["device"]), cfg_scale=3.0, generator=make_generator(i, ctx["device"])).cpu()
                         for i in range(0, n_samples, 500)])
    m = evaluate(samples, labels)
    return {"steps": steps, "train_seconds": seconds, "bits_per_dim": bpd, "class_accuracy": m["class_accuracy"], "fid": m["fid"],
            "met": None if ctx["dry"] else bool(bpd <= 1.0 and m["class_accuracy"] >= 0.9)}


def ddp(ctx):
    "The VQ recipe trained as one process and as one process per GPU under torchrun (2 gloo processes in a dry run)."
    n = 2 if ctx["dry"] else torch.cuda.device_count()
    r = bench_ddp.compare(ctx["out"] / "ddp", "vq", "smoke" if ctx["dry"] else "quick", 12 if ctx["dry"] else 400, n, ctx["device"])
    return {**r, "met": None if ctx["dry"] else bool(r["weights_agree"])}


STEPS = {"cuda_tests": cuda_tests, "decode": decode, "train": train, "next_scale": next_scale, "masked": masked,
         "speculative": speculative, "ddp": ddp, "long_recipes": long_recipes, "pixel_transformer": pixel_transformer}
DEFAULT_STEPS = ("cuda_tests", "decode", "train", "next_scale", "masked", "speculative", "ddp")


def commit() -> str:
    try: return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip() or "unknown"
    except OSError: return "unknown"


def summary(report: dict) -> str:
    lines = [f"# GPU check: {report['device']}", "",
             f"{'Dry run on CPU (tiny sizes; timings mean nothing)' if report['dry_run'] else 'Reference sizes'}; torch "
             f"{report['torch']}; commit {report['commit']}; {report['date']}; {report['seconds']:.0f} s", "",
             "| step | status | seconds | figure | target met |", "|---|---|---:|---|---|"]
    for name, s in report["steps"].items():
        r = s.get("result") or {}
        figure = {"cuda_tests": lambda: f"{r.get('passed', 0)} passed, {r.get('skipped', 0)} skipped, {r.get('failed', 0)} failed",
                  "decode": lambda: f"{r['best_ms_per_step']:.3f} ms per token step ({r['fastest']})",
                  "train": lambda: f"{r['tokens_per_s_shared'] / 1e6:.2f}M tokens/s (plain decoder {r['tokens_per_s_plain'] / 1e6:.2f}M)",
                  "next_scale": lambda: ", ".join(f"batch {x['batch']}: {x['ratio']:.2f}x" for x in r["rows"]),
                  "masked": lambda: ", ".join(f"batch {x['batch']}: {x['ratio']:.2f}x" for x in r["rows"]),
                  "speculative": lambda: ", ".join(f"{x['sampler'].split(' ')[0]} {x['forward_passes_per_image']} passes, "
                                                   f"{x['images_per_s']:.1f}/s" for x in r["rows"]),
                  "ddp": lambda: ", ".join(f"{x['model']} {x['ratio']:.2f}x" for x in r["rows"])
                                 + f" ({r['nproc']} processes / 1; weights agree: {r['weights_agree']})",
                  "long_recipes": lambda: ", ".join(f"{x['paradigm']} {100 * x['class_accuracy']:.1f}% FID {x['fid']:.2f} "
                                                    f"({x['train_seconds']:.0f} s)" for x in r["rows"]),
                  "pixel_transformer": lambda: f"{r['bits_per_dim']:.4f} bits/dim, {100 * r['class_accuracy']:.1f}% at cfg 3, "
                                               f"FID {r['fid']:.2f} ({r['steps']} steps, {r['train_seconds']:.0f} s)"}[name]
        try: fig = figure() if s.get("result") else s.get("error", "")[:120]
        except (KeyError, TypeError, ValueError) as e: fig = f"(no figure: {e})"
        fig = fig.replace("|", "/").replace("\n", " ")  # one table row whatever an error message holds
        met = {True: "yes", False: "**no**", None: "-"}[r.get("met")]
        lines.append(f"| {name} | {s['status']} | {s['seconds']:.1f} | {fig} | {met} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--out", default="runs/gpu_check", help="folder for gpu_check.json, gpu_check.md and each step's files")
    p.add_argument("--dry-run", action="store_true", help="every step at tiny size on CPU, to prove the script runs")
    p.add_argument("--minutes", type=float, default=8.0, help="steps not started by then are skipped (default 8)")
    p.add_argument("--steps", default=",".join(DEFAULT_STEPS), help=f"a subset of {','.join(STEPS)} (default: all but long_recipes)")
    p.add_argument("--long-steps", type=int, default=4000, help="training steps of each long recipe (default 4000)")
    a = p.parse_args(argv)
    names = a.steps.split(",")
    unknown = [n for n in names if n not in STEPS]
    if unknown: p.error(f"--steps: unknown {unknown}; expected some of {list(STEPS)}")
    if a.minutes <= 0: p.error(f"--minutes: expected a positive number, got {a.minutes}")
    if a.long_steps < 1: p.error(f"--long-steps: expected a positive number of steps, got {a.long_steps}")
    if not a.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine, "
              "or add --dry-run to exercise every step at tiny size on CPU", file=sys.stderr)
        return 2
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    ctx = {"out": out, "dry": a.dry_run, "device": "cpu" if a.dry_run else "cuda",
           "batches": (1, 2) if a.dry_run else (1, 16, 256), "rounds": 1 if a.dry_run else 3, "long_steps": a.long_steps,
           "left": lambda: max(1.0, a.minutes * 60 - (time.time() - t0))}
    ctx["device_name"] = "CPU (dry run)" if a.dry_run else torch.cuda.get_device_name()
    report = {"device": ctx["device_name"], "torch": torch.__version__,
              "commit": commit(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "dry_run": a.dry_run, "targets": TARGETS, "steps": {}}
    for name in names:
        s0 = time.time()
        if s0 - t0 > a.minutes * 60:
            report["steps"][name] = {"status": "skipped", "seconds": 0.0, "error": f"out of time ({a.minutes} minutes)"}; continue
        print(f"== {name}", flush=True)
        try: report["steps"][name] = {"status": "ok", "result": STEPS[name](ctx)}
        except Exception as e:  # one broken step must not cost the rest of a short GPU window
            report["steps"][name] = {"status": "failed", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        if name == "cuda_tests" and report["steps"][name]["status"] == "ok":
            r = report["steps"][name]["result"]
            if r.get("failed") or r.get("error"):
                report["steps"][name].update(status="failed", error=f"pytest exit {r['returncode']}: see cuda_tests.log")
        report["steps"][name]["seconds"] = time.time() - s0
    report["seconds"] = time.time() - t0
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "gpu_check.md").write_text(summary(report))
    print(summary(report))
    return 0 if all(s["status"] == "ok" for s in report["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
