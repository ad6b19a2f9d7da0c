"""Ship a full-budget leaderboard run's checkpoints with the package (a maintainer's step, run once per retrain).

    argen-lit leaderboard --budget full --out-dir runs/leaderboard     # trains every paradigm (~45 min, 2 CPU cores)
    python ci/ship_pretrained.py runs/leaderboard/full COMMIT          # copies them to argen_lit/assets/pretrained

COMMIT is the commit the run trained at (default: HEAD). After a sampler change, refresh the manifest's figures
without touching the shipped files:

    argen-lit leaderboard --out-dir runs/leaderboard                    # scores the shipped checkpoints
    python ci/ship_pretrained.py --rescore runs/leaderboard/pretrained  # their notes, figures and spot checks

Each checkpoint's config.json meta gains its provenance (command, commit, date, device, torch, budget); the folder's
manifest.json gets every file's sha256, the folders each paradigm loads, the run's leaderboard figures, and a spot
check (class accuracy of 100 seeded samples) that tests/test_pretrained.py recomputes.
"""
import datetime, json, shutil, subprocess, sys
from dataclasses import asdict
from pathlib import Path
import torch
from argen_lit.core import CONFIG_FILE, WEIGHTS_FILE, is_checkpoint, write_atomic
from argen_lit.leaderboard import MANIFEST, PRETRAINED, _sha256, pretrained_dir, read_leaderboard, spot_check

FOLDERS = {"pixels": ["pixels"], "vq": ["vq_tokenizer", "vq_prior"], "bytes": ["bytes"],
           "next_scale": ["ms_tokenizer", "next_scale_prior"], "masked": ["vq_tokenizer", "masked_prior"],
           "flow": ["latent_tokenizer", "flow_prior"]}


def figures(run: Path, records: dict) -> dict:
    "Per paradigm: the folders it loads, its sampler note, its leaderboard figures, and a spot check recomputed from `run`."
    paradigms = {}
    for name, folders in FOLDERS.items():
        check = spot_check(name, run, n=100, device="cpu")
        keep = ("fid", "precision", "recall", "class_accuracy", "bits_per_dim", "images_per_s", "train_seconds")
        paradigms[name] = {"folders": folders, "note": records[name]["note"], "spot_check": check,
                           "leaderboard": {k: records[name]["metrics"][k] for k in keep}}
        print(f"{name}: spot check {check}")
    return paradigms


def rescore(run: str) -> None:
    "Refresh the manifest's figures from a pretrained-budget run over the shipped files (the files stay as they are)."
    run, dest = Path(run), pretrained_dir()
    records = {r["paradigm"]: r for r in read_leaderboard(run)}
    if set(records) != set(FOLDERS) or {r["budget"] for r in records.values()} != {"pretrained"}:
        sys.exit(f"{run}: expected a pretrained-budget record of every paradigm, found {sorted(records)}")
    man = json.loads((dest / MANIFEST).read_text())
    scored = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip():
        scored += " + uncommitted changes (the commit that ships this manifest)"
    write_atomic(dest / MANIFEST, json.dumps({**man, "paradigms": figures(run, records), "scored_at": scored}, indent=2))


def main(run: str, commit: str | None = None) -> None:
    run, dest = Path(run), pretrained_dir()
    records = {r["paradigm"]: r for r in read_leaderboard(run)}
    if set(records) != set(FOLDERS): sys.exit(f"{run}: expected a record of every paradigm, found {sorted(records)}")
    commit = commit or subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    shutil.rmtree(dest, ignore_errors=True); dest.mkdir(parents=True)
    files = {}
    for folder in sorted({f for fs in FOLDERS.values() for f in fs}):
        if not is_checkpoint(run / folder): sys.exit(f"{run / folder}: not a checkpoint")
        (dest / folder).mkdir()
        shutil.copyfile(run / folder / WEIGHTS_FILE, dest / folder / WEIGHTS_FILE)
        rec = json.loads((run / folder / CONFIG_FILE).read_text())
        rec["meta"]["provenance"] = {
            "command": "argen-lit leaderboard --budget full", "commit": commit, "torch": torch.__version__,
            "device": records["vq"]["device"], "date": records["vq"]["date"], "budget": asdict(PRETRAINED) | {"name": "full"},
            "shipped": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        write_atomic(dest / folder / CONFIG_FILE, json.dumps(rec, indent=2))
        files[folder] = {n: _sha256(dest / folder / n) for n in (CONFIG_FILE, WEIGHTS_FILE)}
    write_atomic(dest / MANIFEST, json.dumps({"files": files, "paradigms": figures(run, records), "commit": commit}, indent=2))
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"shipped {len(files)} checkpoints, {size / 1e6:.1f} MB, to {dest}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rescore"]: rescore(sys.argv[2])
    else: main(*sys.argv[1:3])
