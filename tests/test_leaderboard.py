import json
import shutil
import pytest
from argen_lit.cli import main
from argen_lit.eval import LEADERBOARD_COLUMNS as COLUMNS
from argen_lit.leaderboard import run_folder, leaderboard_table, read_leaderboard, run_leaderboard
from argen_lit.recipes import BUDGETS, get_budget


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    out = tmp_path_factory.mktemp("lb")
    return out, run_leaderboard("smoke", ["vq", "masked"], out_dir=out, device="cpu")


def test_records_have_every_column_and_the_files_are_written(board):
    out, records = board
    assert [r["paradigm"] for r in records] == ["vq", "masked"]
    for r in records:
        assert set(COLUMNS) <= set(r["metrics"]) and r["device"] == "cpu" and r["budget"] == "smoke"
        m = r["metrics"]
        assert m["fid"] > 0 and 0 <= m["class_accuracy"] <= 1 and m["images_per_s"] > 0 and m["parameters"] > 0
        assert m["class_accuracy_low"] <= m["class_accuracy"] <= m["class_accuracy_high"]  # its 95% interval
    passes = {r["paradigm"]: r["metrics"]["forward_passes_per_image"] for r in records}
    assert passes == {"vq": 49, "masked": 12}  # one pass per token / per MaskGIT step
    run = out / "smoke"
    for f in ("records.jsonl", "leaderboard.md", "samples.png", "samples_vq.npy", "vq_tokenizer/config.json", "masked_prior/model.safetensors"):
        assert (run / f).exists(), f
    table = (run / "leaderboard.md").read_text()
    assert table.count("\n| vq |") == 1 and table.count("\n| masked |") == 1


def test_a_second_run_skips_what_is_done(board):
    out, records = board
    run = out / "smoke"
    before = (run / "records.jsonl").read_text()
    again = run_leaderboard("smoke", ["vq", "masked"], out_dir=out, device="cpu")
    assert (run / "records.jsonl").read_text() == before and again == records


def test_a_lost_record_is_measured_again_from_the_checkpoints(board):
    out, records = board
    run = out / "smoke"
    lines = (run / "records.jsonl").read_text().splitlines()
    (run / "records.jsonl").write_text(lines[0] + "\n")  # keep vq, lose masked
    stamp = (run / "masked_prior/model.safetensors").stat().st_mtime_ns
    again = run_leaderboard("smoke", ["vq", "masked"], out_dir=out, device="cpu")
    assert (run / "masked_prior/model.safetensors").stat().st_mtime_ns == stamp  # loaded, not retrained
    m_old, m_new = records[1]["metrics"], again[1]["metrics"]
    assert m_new["train_seconds"] == m_old["train_seconds"] and m_new["parameters"] == m_old["parameters"]
    assert m_new["fid"] == pytest.approx(m_old["fid"], rel=1e-6)  # same weights, same seed: same samples
    assert len(read_leaderboard(run)) == 2


def test_a_stamp_without_newer_budget_fields_still_matches(tmp_path):
    run = tmp_path / "smoke"; run.mkdir()
    old = {k: v for k, v in json.loads(json.dumps(get_budget("smoke").__dict__)).items() if k != "tok_channels"}
    (run / "budget.json").write_text(json.dumps(old))  # written before tok_channels existed
    assert run_folder(tmp_path, get_budget("smoke")) == run
    (run / "budget.json").write_text(json.dumps({**old, "steps": 99}))
    with pytest.raises(ValueError, match="budget"): run_folder(tmp_path, get_budget("smoke"))


def test_table_lists_best_fid_first():
    recs = [{"paradigm": p, "note": "n", "device": "cpu", "metrics": {"fid": f, "class_accuracy": 0.5}} for p, f in (("a", 3.0), ("b", 1.0))]
    table = leaderboard_table(recs)
    assert table.index("| b |") < table.index("| a |") and "50.0%" in table


def test_bad_input_gets_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="budget"): get_budget("huge")
    with pytest.raises(ValueError, match="paradigms"): run_leaderboard("smoke", ["gan"], out_dir=tmp_path)
    with pytest.raises(SystemExit): main(["leaderboard", "--budget", "huge"])
    assert set(BUDGETS) == {"smoke", "quick", "full"}


def test_cli_runs_the_leaderboard(board, capsys):
    out, _ = board
    assert main(["leaderboard", "--budget", "smoke", "--paradigms", "vq", "--out-dir", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "| vq |" in printed and "| masked |" in printed  # a subset run keeps the rows measured before
    assert "| masked |" in (out / "smoke/leaderboard.md").read_text()


def test_a_record_whose_samples_are_lost_is_measured_again(board):
    out, records = board
    run = out / "smoke"
    (run / "samples_vq.npy").unlink()
    again = run_leaderboard("smoke", ["vq"], out_dir=out, device="cpu")
    assert (run / "samples_vq.npy").is_file() and [r["paradigm"] for r in again] == ["vq", "masked"]
    assert again[0]["metrics"]["fid"] == pytest.approx(records[0]["metrics"]["fid"], rel=1e-6)


def test_a_folder_made_under_other_budget_settings_is_refused(board):
    out, _ = board
    changed = get_budget("smoke").__class__(**{**get_budget("smoke").__dict__, "steps": 6})
    with pytest.raises(ValueError, match="budget"): run_leaderboard(changed, ["vq"], out_dir=out, device="cpu")


def test_more_seeds_measure_again_and_keep_every_seed(board, tmp_path):
    out, records = board
    shutil.copytree(out / "smoke", tmp_path / "smoke")
    first = {r["paradigm"]: r for r in records}["vq"]
    assert [s["seed"] for s in first["per_seed"]] == [0] and first["metrics"]["fid_std"] is None  # the smoke budget: one seed
    again = {r["paradigm"]: r for r in run_leaderboard("smoke", ["vq"], out_dir=tmp_path, device="cpu", seeds=2)}
    vq, m = again["vq"], again["vq"]["metrics"]
    assert [s["seed"] for s in vq["per_seed"]] == [0, 1] and m["n_seeds"] == 2
    assert vq["per_seed"][0]["fid"] == pytest.approx(first["metrics"]["fid"], rel=1e-6)  # seed 0: the one-seed run's draw
    assert m["fid"] == pytest.approx((vq["per_seed"][0]["fid"] + vq["per_seed"][1]["fid"]) / 2) and m["fid_std"] > 0
    assert m["train_seconds"] == first["metrics"]["train_seconds"]  # loaded, not retrained
    table = (tmp_path / "smoke" / "leaderboard.md").read_text()
    assert "| vq | " in table and " ± " in table and "Sampling seeds 0, 1 (vq); seed 0 (masked)." in table  # masked kept its one seed
    assert read_leaderboard(tmp_path / "smoke")[0]["per_seed"] == vq["per_seed"]


def test_fewer_seeds_keep_a_richer_record_and_old_records_are_measured_again(board, tmp_path):
    out, records = board
    shutil.copytree(out / "smoke", tmp_path / "smoke")
    run = tmp_path / "smoke"
    run_leaderboard("smoke", ["vq"], out_dir=tmp_path, device="cpu", seeds=[1, 0])
    before = (run / "records.jsonl").read_text()
    again = {r["paradigm"]: r for r in run_leaderboard("smoke", ["vq"], out_dir=tmp_path, device="cpu", seeds=1)}
    assert (run / "records.jsonl").read_text() == before and len(again["vq"]["per_seed"]) == 2  # seed 0 is among [1, 0]
    lines = [json.loads(line) for line in before.splitlines()]
    for r in lines: r.pop("per_seed", None)  # records written before seeds were recorded
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    again = run_leaderboard("smoke", ["vq", "masked"], out_dir=tmp_path, device="cpu")
    assert all([s["seed"] for s in r["per_seed"]] == [0] for r in again)  # both measured again, with their seed
    assert "Sampling seed 0." in (run / "leaderboard.md").read_text() and leaderboard_table([]).count("\n") == 1


def test_a_variant_is_measured_only_when_named_and_joins_the_table(board, tmp_path):
    from argen_lit.leaderboard import PARADIGMS, VARIANTS, contenders
    assert not set(PARADIGMS) & set(VARIANTS) and list(contenders()) == [*PARADIGMS, *VARIANTS]
    out, _ = board
    shutil.copytree(out / "smoke", tmp_path / "smoke")            # vq and masked measured already
    records = run_leaderboard("smoke", ["star", "stable_star"], out_dir=tmp_path, device="cpu")
    assert [r["paradigm"] for r in records] == ["vq", "masked", "star", "stable_star"]
    passes = {r["paradigm"]: r["metrics"]["forward_passes_per_image"] for r in records}
    assert passes["star"] == 6 and passes["stable_star"] == 5 + 7   # one pass per scale; the 7x7 map by rows
    table = (tmp_path / "smoke" / "leaderboard.md").read_text()
    assert table.count("\n| star |") == 1 and table.count("\n| stable_star |") == 1
    with pytest.raises(ValueError, match="no shipped checkpoints"):
        run_leaderboard("pretrained", ["star"], out_dir=tmp_path / "p", device="cpu")
    assert not (tmp_path / "p").exists()                          # refused before anything was copied
