"""Ship a full-budget leaderboard run's checkpoints with the package (a maintainer's step, run once per retrain).

    argen-lit leaderboard --budget full --out-dir runs/leaderboard     # trains every paradigm (~45 min, 2 CPU cores)
    python ci/ship_pretrained.py runs/leaderboard/full COMMIT          # copies them to argen_lit/assets/pretrained

COMMIT is the commit the run trained at (default: HEAD). A paradigm new to the leaderboard joins the shipped set
without retraining the others (its folders must be new ones):

    argen-lit leaderboard --budget full --paradigms symbols --out-dir runs/leaderboard
    python ci/ship_pretrained.py --add runs/leaderboard/full symbols COMMIT

After a sampler change, refresh the manifest's figures
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
from argen_lit.leaderboard import MANIFEST, PRETRAINED, _sha256, pretrained_dir, read_leaderboard, read_manifest, spot_check

FOLDERS = {"pixels": ["pixels"], "vq": ["vq_tokenizer", "vq_prior"], "bytes": ["bytes"], "symbols": ["symbols"],
           "next_scale": ["ms_tokenizer", "next_scale_prior"], "masked": ["vq_tokenizer", "masked_prior"],
           "flow": ["latent_tokenizer", "flow_prior"]}


def figures(run: Path, records: dict, names=None) -> dict:
    """Per paradigm of `names` (default: all): the folders it loads, its sampler note, its leaderboard figures, and a
    spot check recomputed from `run`."""
    paradigms = {}
    for name in names or FOLDERS:
        folders = FOLDERS[name]
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
    scored = head()
    if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip():
        scored += " + uncommitted changes (the commit that ships this manifest)"
    paradigms = figures(run, records)
    for name, old in man["paradigms"].items():   # a paradigm added later keeps the commit it trained at
        if "commit" in old and name in paradigms: paradigms[name]["commit"] = old["commit"]
    write_atomic(dest / MANIFEST, json.dumps({**man, "paradigms": paradigms, "scored_at": scored}, indent=2))


def ship_folder(run: Path, dest: Path, folder: str, record: dict, commit: str) -> dict:
    "Copy one checkpoint folder of `run` to `dest`, its config stamped with its provenance; returns its files' sha256."
    if not is_checkpoint(run / folder): sys.exit(f"{run / folder}: not a checkpoint")
    (dest / folder).mkdir()
    shutil.copyfile(run / folder / WEIGHTS_FILE, dest / folder / WEIGHTS_FILE)
    rec = json.loads((run / folder / CONFIG_FILE).read_text())
    rec["meta"]["provenance"] = {
        "command": "argen-lit leaderboard --budget full", "commit": commit, "torch": torch.__version__,
        "device": record["device"], "date": record["date"], "budget": asdict(PRETRAINED) | {"name": "full"},
        "shipped": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    write_atomic(dest / folder / CONFIG_FILE, json.dumps(rec, indent=2))
    return {n: _sha256(dest / folder / n) for n in (CONFIG_FILE, WEIGHTS_FILE)}


def head() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def main(run: str, commit: str | None = None) -> None:
    run, dest = Path(run), pretrained_dir()
    records = {r["paradigm"]: r for r in read_leaderboard(run)}
    if set(records) != set(FOLDERS): sys.exit(f"{run}: expected a record of every paradigm, found {sorted(records)}")
    commit = commit or head()
    shutil.rmtree(dest, ignore_errors=True); dest.mkdir(parents=True)
    files = {folder: ship_folder(run, dest, folder, records["vq"], commit)
             for folder in sorted({f for fs in FOLDERS.values() for f in fs})}
    write_atomic(dest / MANIFEST, json.dumps({"files": files, "paradigms": figures(run, records), "commit": commit}, indent=2))
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"shipped {len(files)} checkpoints, {size / 1e6:.1f} MB, to {dest}")


def add(run: str, names: str, commit: str | None = None) -> None:
    """Ship the paradigms `names` (comma-separated) of full-budget run `run` beside those already shipped; their
    folders must be new (the shipped ones stay byte for byte). Each added paradigm records the commit it trained at.
    Everything is checked and spot-checked before anything is copied; a failed copy removes what it made."""
    run, dest = Path(run), pretrained_dir()
    records, names = {r["paradigm"]: r for r in read_leaderboard(run)}, names.split(",")
    unknown = [n for n in names if n not in FOLDERS or n not in records or records[n]["budget"] != "full"]
    if unknown: sys.exit(f"{run}: no full-budget record of {unknown} (known paradigms: {sorted(FOLDERS)})")
    man, commit = read_manifest(dest), commit or head()
    shipped = [n for n in names if n in man["paradigms"]]
    if shipped: sys.exit(f"{shipped}: already shipped; retrain them all with main() instead")
    folders = sorted({f for n in names for f in FOLDERS[n]})
    taken = [f for f in folders if f in man["files"] or (dest / f).exists()]
    if taken: sys.exit(f"{taken}: already shipped and loaded by other paradigms; retrain them all with main() instead")
    missing = [str(run / f) for f in folders if not is_checkpoint(run / f)]
    if missing: sys.exit(f"{missing}: not checkpoints")
    added = {n: {**f, "commit": commit} for n, f in figures(run, records, names).items()}
    try:
        for folder in folders:
            owner = next(n for n in names if folder in FOLDERS[n])
            man["files"][folder] = ship_folder(run, dest, folder, records[owner], commit)
    except BaseException:
        for folder in folders: shutil.rmtree(dest / folder, ignore_errors=True)
        raise
    order = list(FOLDERS) + [n for n in man["paradigms"] if n not in FOLDERS]   # the registry's order, strays kept
    man["paradigms"] = {n: added.get(n) or man["paradigms"][n] for n in order if n in added or n in man["paradigms"]}
    write_atomic(dest / MANIFEST, json.dumps(man, indent=2))
    print(f"added {', '.join(names)} ({', '.join(folders)}) to {dest}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rescore"]: rescore(sys.argv[2])
    elif sys.argv[1:2] == ["--add"]: add(*sys.argv[2:5])
    else: main(*sys.argv[1:3])
