"""The shipped full-budget checkpoints: they load and match their configs, they still draw what they drew when they
were shipped (a spot check of 100 seeded samples per paradigm), they carry their provenance, the default
`argen-lit leaderboard` scores them without training, and a damaged shipped file is refused before it is used."""
import json, shutil
import pytest
import argen_lit.leaderboard as LB
from argen_lit.cli import main
from argen_lit.core import CONFIG_FILE, WEIGHTS_FILE, InputError, InputNotFoundError, read_meta

MANIFEST = LB.read_manifest()
TOLERANCE = 0.03  # class accuracy of 100 samples: 3 samples may flip where another BLAS rounds differently


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    run = tmp_path_factory.mktemp("pretrained")
    return run, LB.install_pretrained(run)


def test_every_paradigm_ships_with_provenance(installed):
    run, paradigms = installed
    assert sorted(paradigms) == sorted(LB.PARADIGMS)
    for folder in MANIFEST["files"]:
        prov = read_meta(run / folder)["provenance"]
        assert prov["command"] == "argen-lit leaderboard --budget full" and prov["commit"] and prov["date"] and prov["device"]
    size = sum(p.stat().st_size for p in LB.pretrained_dir().rglob("*") if p.is_file())
    assert size < 40e6, f"{size / 1e6:.1f} MB shipped"


@pytest.mark.parametrize("name", sorted(MANIFEST["paradigms"]))
def test_shipped_models_still_draw_what_they_drew(installed, name):
    want = MANIFEST["paradigms"][name]["spot_check"]
    got = LB.spot_check(name, installed[0], n=want["n"], device="cpu")  # loads and checks each config, trains nothing
    assert abs(got["class_accuracy"] - want["class_accuracy"]) <= TOLERANCE, (got, want)


def test_the_default_leaderboard_scores_the_shipped_models(tmp_path, capsys):
    assert main(["leaderboard", "--paradigms", "vq", "--out-dir", str(tmp_path), "--device", "cpu"]) == 0
    [rec] = LB.read_leaderboard(tmp_path / "pretrained")
    full = MANIFEST["paradigms"]["vq"]["leaderboard"]
    assert rec["budget"] == "pretrained" and rec["metrics"]["train_seconds"] == pytest.approx(full["train_seconds"])
    assert rec["metrics"]["class_accuracy"] == pytest.approx(full["class_accuracy"], abs=0.02)
    assert "| vq |" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "missing"])
def test_a_damaged_shipped_file_is_refused(tmp_path, damage):
    src = tmp_path / "assets"; shutil.copytree(LB.pretrained_dir(), src)
    w = src / "vq_prior" / WEIGHTS_FILE
    data = bytearray(w.read_bytes())
    if damage == "flipped byte": data[len(data) // 2] ^= 1; w.write_bytes(bytes(data))
    elif damage == "truncated": w.write_bytes(bytes(data[:1000]))
    else: w.unlink()
    with pytest.raises(InputNotFoundError if damage == "missing" else InputError, match="vq_prior"):
        LB.install_pretrained(tmp_path / "run", directory=src)
    assert not (tmp_path / "run" / "vq_prior").exists()
    (src / "manifest.json").write_text("{broken")
    with pytest.raises(InputError, match="manifest.json"):
        LB.install_pretrained(tmp_path / "run", directory=src)
    assert json.loads((LB.pretrained_dir() / "manifest.json").read_text())  # the package's own copy is untouched
    assert (LB.pretrained_dir() / "vq_prior" / CONFIG_FILE).is_file()
