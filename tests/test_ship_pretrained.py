"""ci/ship_pretrained.py --add: a paradigm new to the leaderboard joins the shipped checkpoints without touching the
others, with its provenance; a folder that is already shipped, or a run without a full-budget record, is refused."""
import importlib.util, json, shutil
from pathlib import Path
import pytest
import argen_lit.leaderboard as LB
from argen_lit.core import CONFIG_FILE, WEIGHTS_FILE, read_meta

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ship(tmp_path, monkeypatch):
    "The script as a module, shipping into a copy of the package's checkpoints; spot checks stubbed (they sample)."
    spec = importlib.util.spec_from_file_location("ship_pretrained", ROOT / "ci" / "ship_pretrained.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    dest = tmp_path / "pretrained"; shutil.copytree(LB.pretrained_dir(), dest)
    monkeypatch.setattr(mod, "pretrained_dir", lambda: dest)
    monkeypatch.setattr(mod, "spot_check", lambda name, run, n, device: {"n": n, "class_accuracy": 0.5})
    return mod, dest


def full_run(tmp_path, dest, name="symbols", budget="full") -> Path:
    "A run folder holding one record of `name` and a copy of its shipped checkpoint."
    run = tmp_path / "run"; run.mkdir(parents=True)
    shutil.copytree(dest / name, run / name)
    metrics = {k: 0.5 for k in ("fid", "precision", "recall", "class_accuracy", "images_per_s", "train_seconds")}
    rec = {"paradigm": name, "budget": budget, "note": "a note", "metrics": {**metrics, "bits_per_dim": None},
           "device": "cpu", "date": "2026-12-03"}
    (run / "records.jsonl").write_text(json.dumps(rec) + "\n")
    return run


def test_add_ships_a_new_paradigm_and_leaves_the_others(ship, tmp_path):
    mod, dest = ship
    run = full_run(tmp_path, dest)
    before = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file() and "symbols" not in p.parts}
    man = json.loads((dest / LB.MANIFEST).read_text())   # the state before symbols was shipped
    del man["files"]["symbols"], man["paradigms"]["symbols"]; shutil.rmtree(dest / "symbols")
    (dest / LB.MANIFEST).write_text(json.dumps(man))
    mod.add(str(run), "symbols", "c0ffee")
    after = LB.read_manifest(dest)
    assert after["paradigms"]["symbols"]["commit"] == "c0ffee" and after["paradigms"]["symbols"]["note"] == "a note"
    assert list(after["paradigms"]) == [n for n in mod.FOLDERS if n in after["paradigms"]]   # the registry's order
    prov = read_meta(dest / "symbols")["provenance"]
    assert prov["commit"] == "c0ffee" and prov["date"] == "2026-12-03" and prov["command"] == "argen-lit leaderboard --budget full"
    assert (dest / "symbols" / WEIGHTS_FILE).read_bytes() == (run / "symbols" / WEIGHTS_FILE).read_bytes()
    assert LB.install_pretrained(tmp_path / "installed", directory=dest)   # every sha256 matches its file
    assert all(p.read_bytes() == b for p, b in before.items() if p.name != LB.MANIFEST)
    assert {k: v for k, v in after["files"].items() if k != "symbols"} == man["files"]


def test_the_script_ships_every_registered_paradigm(ship):
    assert list(ship[0].FOLDERS) == list(LB.PARADIGMS)


def test_a_failed_add_leaves_the_shipped_set_as_it_was(ship, tmp_path, monkeypatch):
    mod, dest = ship
    run = full_run(tmp_path, dest)
    man = json.loads((dest / LB.MANIFEST).read_text())
    del man["files"]["symbols"], man["paradigms"]["symbols"]; shutil.rmtree(dest / "symbols")
    (dest / LB.MANIFEST).write_text(json.dumps(man))
    def broken(*a): (dest / "symbols").mkdir(); raise OSError("disk full")
    monkeypatch.setattr(mod, "ship_folder", broken)
    with pytest.raises(OSError, match="disk full"): mod.add(str(run), "symbols", "c0ffee")
    assert not (dest / "symbols").exists() and json.loads((dest / LB.MANIFEST).read_text()) == man


def test_add_refuses_shipped_folders_and_missing_records(ship, tmp_path):
    mod, dest = ship
    run = full_run(tmp_path, dest)
    manifest = (dest / LB.MANIFEST).read_bytes()
    with pytest.raises(SystemExit, match="already shipped"): mod.add(str(run), "symbols", "c0ffee")
    with pytest.raises(SystemExit, match="no full-budget record"): mod.add(str(run), "vq", "c0ffee")
    with pytest.raises(SystemExit, match="no full-budget record"): mod.add(str(run), "nonsense", "c0ffee")
    quick = full_run(tmp_path / "q", dest, budget="quick")
    with pytest.raises(SystemExit, match="no full-budget record"): mod.add(str(quick), "symbols", "c0ffee")
    assert (dest / LB.MANIFEST).read_bytes() == manifest and (dest / "symbols" / CONFIG_FILE).is_file()
