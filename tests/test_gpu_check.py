"""The prepared GPU script cannot rot: its dry run exercises every step at tiny size on CPU, and without CUDA the
real run refuses to start with a clear message."""
import json, subprocess, sys
from pathlib import Path
import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "ci" / "gpu_check.py"


def run(*args, cwd=None):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def test_the_dry_run_exercises_every_step_on_cpu(tmp_path):
    p = run("--dry-run", "--out", str(tmp_path))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] and list(report["steps"]) == ["cuda_tests", "decode", "train", "next_scale", "masked", "speculative", "ddp"]
    assert all(s["status"] == "ok" for s in report["steps"].values()), {k: s.get("error") for k, s in report["steps"].items()}
    steps = {k: s["result"] for k, s in report["steps"].items()}
    if not torch.cuda.is_available(): assert steps["cuda_tests"]["skipped"] >= 10 and not steps["cuda_tests"].get("passed")
    decoders = [r["decoder"] for r in steps["decode"]["rows"]]
    assert "StaticDecoder compile" in decoders and "generate, static cache" in decoders and steps["decode"]["best_ms_per_step"] > 0
    assert steps["train"]["tokens_per_s_shared"] > 0 and steps["train"]["compile"]
    for name in ("next_scale", "masked"): assert [r["batch"] for r in steps[name]["rows"]] == [1, 2]
    passes = {r["sampler"].split()[0]: r["forward_passes_per_image"] for r in steps["speculative"]["rows"]}
    assert passes["plain"] == 49 and 1 <= passes["SJD"] <= 49 and 1 <= passes["GSD"] <= 49
    assert steps["ddp"]["nproc"] == 2 and steps["ddp"]["weights_agree"] and [r["model"] for r in steps["ddp"]["rows"]] == ["vq_prior", "vq_tokenizer"]
    md = (tmp_path / "gpu_check.md").read_text()
    assert md.startswith("# GPU check: CPU (dry run)") and md.count("| ok |") == 7


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where CUDA is absent")
def test_without_cuda_the_real_run_refuses_to_start(tmp_path):
    p = run("--out", str(tmp_path))
    assert p.returncode == 2 and "no CUDA device" in p.stderr and "--dry-run" in p.stderr
    assert not (tmp_path / "gpu_check.json").exists()


def test_bad_arguments_are_named(tmp_path):
    p = run("--dry-run", "--steps", "decode,warp", "--out", str(tmp_path))
    assert p.returncode == 2 and "--steps: unknown ['warp']" in p.stderr
    p = run("--dry-run", "--minutes", "0", "--out", str(tmp_path))
    assert p.returncode == 2 and "--minutes" in p.stderr


def test_long_recipes_train_score_and_stamp_their_checkpoints(tmp_path):
    p = run("--dry-run", "--steps", "long_recipes", "--long-steps", "50", "--out", str(tmp_path))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    r = json.loads((tmp_path / "gpu_check.json").read_text())["steps"]["long_recipes"]["result"]
    assert [x["paradigm"] for x in r["rows"]] == ["pixels", "bytes", "next_scale"] and r["budget"]["steps"] == 3  # dry: 3 steps
    assert all(0 <= x["class_accuracy_low"] <= x["class_accuracy"] <= x["class_accuracy_high"] <= 1 for x in r["rows"])
    meta = json.loads((tmp_path / "long/long_3/pixels/config.json").read_text())["meta"]
    assert meta["recipe"]["steps"] == 3 and meta["provenance"]["device"] == "CPU (dry run)" and "--long-steps 50" in meta["provenance"]["command"]
    assert meta["provenance"]["budget"]["name"] == "long_3" and meta["train_seconds"] > 0


def test_the_pixel_transformer_long_recipe_step_trains_scores_and_keeps_its_provenance(tmp_path):
    p = run("--dry-run", "--steps", "pixel_transformer", "--long-steps", "50", "--out", str(tmp_path))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    step = json.loads((tmp_path / "gpu_check.json").read_text())["steps"]["pixel_transformer"]
    assert step["status"] == "ok", step.get("error")
    r = step["result"]
    assert r["steps"] == 3 and 0 <= r["class_accuracy"] <= 1 and 1.0 < r["bits_per_dim"] < 9 and r["met"] is None
    meta = json.loads((tmp_path / "long/pixel_transformer/config.json").read_text())["meta"]
    assert meta["recipe"]["class_every_position"] and meta["provenance"]["steps"] == 3
    assert "class_every_position=True" in meta["provenance"]["command"]
    assert "bits/dim" in (tmp_path / "gpu_check.md").read_text()
