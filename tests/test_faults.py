"""Fault injection: a process killed at ANY write point leaves every file whole (the old version or the new one), and
the next run resumes and finishes with the same result as a run that was never killed.

Each kill is a real process dying with `os._exit(137)` (what SIGKILL leaves: no cleanup code runs) just before one
write point, listed by a clean run (see fault_writer.py); with TORN=1 a file write is cut in half first."""
import json, os, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import numpy as np
import torch
from safetensors.torch import load_file
import argen_lit.leaderboard as lb
from argen_lit.core import is_checkpoint, load_model, read_meta
from fault_writer import toy_leaderboard_patches, toy_parts

WRITER = Path(__file__).with_name("fault_writer.py")
SCORES = ("fid", "precision", "recall", "class_accuracy", "parameters")


def writer(what: str, target: Path, kill_at: int = 0, torn: bool = False, list_points: bool = False):
    env = {**os.environ, "KILL_AT": str(kill_at), "TORN": "1" if torn else "", "LIST_POINTS": "1" if list_points else "",
           "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, str(WRITER), what, str(target)], env=env, capture_output=True, text=True, timeout=300)


def kill_cases(what: str, tmp: Path):
    "A clean run's write points, then one killed run per point (and a torn one per file write), two at a time."
    clean = writer(what, tmp / "clean", list_points=True)
    assert clean.returncode == 0 and "FINISHED" in clean.stdout, clean.stderr[-2000:]
    points = [line.split(" ", 2)[2] for line in clean.stdout.splitlines() if line.startswith("POINT ")]
    # a process killed just before an fsync leaves the same files as one killed just after it (fsync matters only
    # when the machine loses power), so those points are listed but not killed at
    cases = [(k, p, False) for k, p in enumerate(points, 1) if p != "fsync"]
    cases += [(k, p, True) for k, p in enumerate(points, 1) if p.startswith("write_")]
    def kill(case):
        k, _, torn = case
        target = tmp / f"kill{k}{'-torn' if torn else ''}"
        return case, target, writer(what, target, k, torn)
    with ThreadPoolExecutor(2) as pool: killed = list(pool.map(kill, cases))
    for (k, p, torn), _, r in killed:
        assert r.returncode == 137 and "FINISHED" not in r.stdout, f"point {k} ({p}) did not kill: {r.stderr[-1000:]}"
    return tmp / "clean", points, killed


def assert_files_whole(run: Path):
    "Every file under its final name parses completely (temporary files, named .*.tmp*, may be left over)."
    for f in run.rglob("*"):
        if not f.is_file() or any(part.startswith(".") for part in f.relative_to(run).parts): continue
        if f.suffix == ".json": json.loads(f.read_text())
        elif f.suffix == ".jsonl" and f.parent.name == "logs":  # a step log is appended to: a kill may cut its last line
            [json.loads(line) for line in f.read_text().splitlines()[:-1]]
        elif f.suffix == ".jsonl": [json.loads(line) for line in f.read_text().splitlines()]
        elif f.suffix == ".npy": np.load(f, allow_pickle=False)
        elif f.suffix == ".safetensors": load_file(str(f))
        elif f.suffix == ".png": assert f.read_bytes()[-8:] == b"IEND\xaeB`\x82", f
        elif f.suffix == ".md": assert f.read_text().endswith("all samples pooled.\n"), f  # the table's last line


def test_a_leaderboard_killed_at_any_write_point_resumes_to_the_same_result(tmp_path, monkeypatch):
    clean, points, killed = kill_cases("leaderboard", tmp_path)
    assert len(points) >= 15 and {"save_file", "rename", "replace", "fsync"} <= {p.split()[0] for p in points}
    assert {"replace budget.json", "replace records.jsonl", "replace samples_toy.npy", "replace leaderboard.md",
            "replace samples.png", "rename toy"} <= set(points)
    for name, value in toy_leaderboard_patches().items(): monkeypatch.setattr(lb, name, value)
    [want] = lb.read_leaderboard(clean / "smoke")
    want_weights = load_file(str(clean / "smoke/toy/model.safetensors"))
    outcomes = []
    for (k, p, torn), target, _ in killed:
        assert_files_whole(target)
        recorded = (target / "smoke").exists() and len(lb.read_leaderboard(target / "smoke")) == 1
        trained = is_checkpoint(target / "smoke/toy")
        [got] = lb.run_leaderboard("smoke", None, target, "cpu")  # the next run, in a fresh state
        assert {m: got["metrics"][m] for m in SCORES} == {m: want["metrics"][m] for m in SCORES}, (k, p)
        weights = load_file(str(target / "smoke/toy/model.safetensors"))
        assert all(torch.equal(weights[n], want_weights[n]) for n in want_weights), (k, p)
        assert np.array_equal(np.load(target / "smoke/samples_toy.npy"), np.load(clean / "smoke/samples_toy.npy"))
        assert len((target / "smoke/records.jsonl").read_text().splitlines()) == 1 and (target / "smoke/samples.png").is_file()
        outcomes.append((k, p, torn, "its record kept, table redrawn" if recorded else
                         "checkpoint loaded, measured again" if trained else "trained and measured again"))
    print("\n".join(f"kill at {k:2d} ({p}{', torn' if t else ''}): {o}" for k, p, t, o in outcomes))


def test_a_checkpoint_overwrite_killed_at_any_write_point_leaves_the_old_or_the_new(tmp_path):
    _, points, killed = kill_cases("overwrite", tmp_path)
    assert {"save_file", "rename"} <= {p.split()[0] for p in points}
    ToyConfig, Toy, _, _ = toy_parts()
    versions = {}
    for seed in (0, 1):
        torch.manual_seed(seed); versions[seed] = Toy(ToyConfig()).state_dict()
    seen = set()
    for (k, p, torn), target, _ in killed:
        assert_files_whole(target)
        model = load_model(Toy, ToyConfig, target)  # a kill between the renames is repaired here
        seed = read_meta(target)["seed"]
        assert all(torch.equal(v, versions[seed][n]) for n, v in model.state_dict().items()), (k, p, "weights of the other config")
        seen.add(seed)
    assert seen == {0}  # the new checkpoint appears only with the last rename, all at once
    assert read_meta(tmp_path / "clean")["seed"] == 1  # and a run that is not killed leaves the new one


def test_a_training_run_killed_at_any_write_point_resumes_to_the_same_weights(tmp_path):
    """Killed anywhere (mid-state, mid-log-line, mid-checkpoint), the same run started again ends with the weights of a
    clean run; one that had saved a state goes on from it (the killed run's log lines stay) rather than starting over."""
    from fault_writer import train_toy
    clean, points, killed = kill_cases("train", tmp_path)
    assert {"rename loop0", "save_file state.safetensors", "write_text state.json", "rename toy"} <= set(points), points
    assert sum(p == "write_line" for p in points) == 12  # one per step
    want = load_file(str(clean / "toy/model.safetensors"))
    resumed_from = set()
    for (k, p, torn), target, _ in killed:
        assert_files_whole(target)
        log = target / "logs/toy.jsonl"
        before = log.read_text().splitlines() if log.is_file() else []
        state = target / ".toy.resume/loop0/state.json"
        saved = json.loads(state.read_text())["step"] if state.is_file() and not is_checkpoint(target / "toy") else 0
        model = train_toy(target)  # the next run, in a fresh state
        assert all(torch.equal(v, want[n]) for n, v in model.state_dict().items()), (k, p, torn)
        assert not (target / ".toy.resume").exists()  # the state goes once the checkpoint is saved
        after = log.read_text().splitlines()
        assert [json.loads(line)["step"] for line in after] == list(range(1, 13)), (k, p, after)  # one line per step, none twice
        if saved:  # it resumed: the lines of the steps before the state are the killed run's own (their seconds too)
            resumed_from.add(saved)
            assert after[:saved] == before[:saved], (k, p)
    assert resumed_from == {3, 6, 9}  # kills fell after each of the three saves, and those runs resumed from them
