from dataclasses import replace
import json
import pytest
import torch
from argen_lit.core import Config, load_checkpoint, read_meta
from argen_lit.recipes import BUDGETS, Budget, Contender, get_budget, load_data, prior_config, train_or_load


class Lin(torch.nn.Linear):
    config = Config()  # save_checkpoint stores a model's config


def lin_fit(calls):
    def fit(m):
        calls.append(1)
        with torch.no_grad(): m.weight.add_(1.0)  # "training" that changes the weights
    return fit


def test_train_or_load_builds_once_then_loads(tmp_path):
    calls = []
    load = lambda d: load_checkpoint(Lin(2, 2), d)
    a, s1 = train_or_load(tmp_path / "m", lambda: Lin(2, 2), lin_fit(calls), load, "cpu", recipe={"steps": 3, "grid": (7, 7)})
    b, s2 = train_or_load(tmp_path / "m", lambda: Lin(2, 2), lin_fit(calls), load, "cpu", recipe={"steps": 3, "grid": (7, 7)})
    assert len(calls) == 1 and s1 == s2 and torch.equal(a.weight, b.weight) and not a.training and not b.training
    meta = json.loads((tmp_path / "m/config.json").read_text())["meta"]
    assert meta["train_seconds"] == s1 and meta["recipe"] == {"steps": 3, "grid": [7, 7]}


def test_train_or_load_builds_after_a_fixed_seed(tmp_path):
    load = lambda d: load_checkpoint(Lin(2, 2), d)
    torch.manual_seed(123)
    a, _ = train_or_load(tmp_path / "a", lambda: Lin(2, 2), lambda m: None, load, "cpu")
    torch.manual_seed(456)
    b, _ = train_or_load(tmp_path / "b", lambda: Lin(2, 2), lambda m: None, load, "cpu")
    assert torch.equal(a.weight, b.weight)  # the global state before the call does not matter


def test_train_or_load_refuses_a_folder_of_another_recipe(tmp_path):
    calls = []
    load = lambda d: load_checkpoint(Lin(2, 2), d)
    train_or_load(tmp_path / "m", lambda: Lin(2, 2), lin_fit(calls), load, "cpu", recipe={"steps": 3})
    before = (tmp_path / "m/model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="recipe"):
        train_or_load(tmp_path / "m", lambda: Lin(2, 2), lin_fit(calls), load, "cpu", recipe={"steps": 4})
    assert len(calls) == 1 and (tmp_path / "m/model.safetensors").read_bytes() == before  # nothing overwritten


def test_a_folder_saved_without_a_recipe_is_loaded(tmp_path):
    from argen_lit.core import save_checkpoint
    save_checkpoint(Lin(2, 2), tmp_path / "old")  # as an earlier version wrote it: no recipe in its meta
    calls = []
    train_or_load(tmp_path / "old", lambda: Lin(2, 2), lin_fit(calls), lambda d: load_checkpoint(Lin(2, 2), d), "cpu",
                  recipe={"steps": 3})
    assert calls == []


def test_budget_fields_after_the_name_are_keywords():
    with pytest.raises(TypeError): Budget("mine", 50, 1, 2, 4, 32, 1, 2)
    b = Budget("mine", tok_steps=1, steps=2, batch=4, width=32, depth=1, aug_copies=2)
    assert b.recipe() == {"tok_steps": 1, "tok_channels": 32, "steps": 2, "batch": 4, "width": 32, "depth": 1, "aug_copies": 2}


def test_slow_steps_go_to_the_slow_models_only():
    b = Budget("mine", tok_steps=1, steps=20, batch=4, width=32, depth=1, aug_copies=2, slow_steps=5)
    assert (b.train_steps(), b.train_steps(slow=True)) == (20, 5)
    assert b.recipe()["steps"] == 20 and b.recipe(slow=True)["steps"] == 5 and b.recipe("batch", slow=True) == {"batch": 4}
    plain = Budget("mine", tok_steps=1, steps=20, batch=4, width=32, depth=1, aug_copies=2)
    assert plain.train_steps(slow=True) == 20 and plain.recipe(slow=True) == plain.recipe()  # unset: every model alike
    full = BUDGETS["full"]  # the shipped checkpoints were trained under these recipes: they must not change
    assert full.recipe(slow=True) == full.recipe() and not full.cpu_bf16
    quick = BUDGETS["quick"]
    assert quick.cpu_bf16 and quick.train_steps(slow=True) < quick.steps


def test_budgets_recipes_and_data():
    assert set(BUDGETS) == {"smoke", "quick", "full"} and get_budget("full") is BUDGETS["full"]
    b = Budget("mine", tok_steps=1, steps=2, batch=4, width=32, depth=1, aug_copies=2)
    assert get_budget(b) is b and b.recipe("steps", "batch") == {"steps": 2, "batch": 4}
    assert set(b.recipe()) >= {"tok_steps", "steps", "batch", "width", "depth", "aug_copies"}
    with pytest.raises(ValueError, match="budget"): get_budget("huge")
    data = load_data(b)
    assert len(data.xtr) == 4000 and len(data.xte) == 1000 and len(data.xaug) == 8000
    assert torch.equal(data.xaug[:4000], data.xtr) and torch.equal(data.yaug[4000:], data.ytr)
    cfg = prior_config(b, 512)
    assert (cfg.d_model, cfg.n_layers, cfg.vocab_size, cfg.grid, cfg.label_dropout) == (32, 1, 512, (7, 7), 0.1)
    c = Contender(lambda y, g: y, torch.nn.Identity(), [], 1.0, "note")
    assert c.bits_per_dim is None


def test_every_registered_recipe_returns_a_contender_that_samples(tmp_path):
    from argen_lit.leaderboard import PARADIGMS
    b = replace(BUDGETS["smoke"], slow_steps=3, cpu_bf16=True)  # the quick budget's two levers, at smoke sizes
    data = load_data(b)
    notes = {"pixels": "raster, cfg 2", "vq": "raster, KV cache, cfg 3", "bytes": "bytes until EOS (256), cfg 3",
             "symbols": "JPEG symbols until STOP, cfg 3, top-p 0.5 sketch, 0.2 details",
             "next_scale": "one pass per scale, cfg 3 (ramped), T 0.8, top-p 0.7", "masked": "MaskGIT, 12 steps, cfg 3, noise 2",
             "flow": "raster, DiSA 32->2 Euler steps (536 head evaluations), T 0.9, cfg 3"}
    assert set(PARADIGMS) == set(notes)
    for name, fit in PARADIGMS.items():
        c = fit(b, data, tmp_path, torch.device("cpu"))
        assert c.note == notes[name] and c.train_seconds > 0 and all(not m.training for m in c.modules), name
        imgs = c.sample(torch.tensor([3, 7]), torch.Generator().manual_seed(0))
        assert imgs.dtype == torch.uint8 and imgs.shape == (2, 1, 28, 28), name
        assert (c.bits_per_dim is not None) == (name == "pixels"), name
    steps = {folder: read_meta(tmp_path / folder)["recipe"]["steps"] for folder in
             ("pixels", "bytes", "symbols", "next_scale_prior", "vq_prior", "masked_prior", "flow_prior")}
    assert steps == {"pixels": 3, "bytes": 3, "symbols": 3, "next_scale_prior": 3, "vq_prior": 5, "masked_prior": 5, "flow_prior": 5}
