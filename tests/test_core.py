import json
from dataclasses import dataclass
import pytest
import torch
from torch import nn
from argen_lit.core import (Config, autocast, cpu_has_bf16, default_device, eval_mode, load_checkpoint, load_config, load_model, make_generator,
                            n_params, one_cycle, progress, save_checkpoint, train_loop)


@dataclass
class TinyConfig(Config):
    width: int = 4   # hidden units
    depth: int = 2   # layers
    @classmethod
    def smoke(cls, **kw): return cls(**{"width": 3, **kw})


class Tiny(nn.Module):
    def __init__(self, config):
        super().__init__(); self.config = config
        self.layers = nn.Sequential(*[nn.Linear(config.width, config.width) for _ in range(config.depth)])


def test_default_device_prefers_override_and_rejects_nonsense(monkeypatch):
    assert default_device("cpu").type == "cpu"
    monkeypatch.setenv("ARGEN_LIT_DEVICE", "cpu")
    assert default_device().type == "cpu"
    with pytest.raises(ValueError, match="device"):
        default_device("not-a-device")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            default_device("cuda")


def test_generator_same_seed_same_stream_independent_of_global_state():
    a = torch.randn(5, generator=make_generator(7))
    torch.manual_seed(123); torch.randn(10)
    b = torch.randn(5, generator=make_generator(7))
    c = torch.randn(5, generator=make_generator(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(TypeError, match="seed"):
        make_generator("7")


def test_autocast_is_noop_on_cpu():
    with autocast("cpu"):
        y = nn.Linear(3, 3)(torch.randn(2, 3))
    assert y.dtype == torch.float32


def test_cpu_autocast_is_opt_in_and_follows_the_cpu():
    with autocast("cpu", cpu=True):
        y = nn.Linear(3, 3)(torch.randn(2, 3))
    assert y.dtype == (torch.bfloat16 if cpu_has_bf16() else torch.float32)
    with autocast("cpu", enabled=False, cpu=True):
        assert nn.Linear(3, 3)(torch.randn(2, 3)).dtype == torch.float32


def test_train_loop_cpu_bf16_computes_the_loss_in_bf16_and_keeps_fp32_weights():
    if not cpu_has_bf16(): pytest.skip("this CPU has no native bf16")
    m, seen = nn.Linear(3, 1), []
    def loss(m, x):
        out = m(x); seen.append(out.dtype); return out.float().pow(2).mean()
    def forever():
        while True: yield torch.ones(4, 3)
    train_loop(m, forever(), loss, 3, 0.1, cpu_bf16=True)
    train_loop(m, forever(), loss, 1, 0.1)
    assert seen == [torch.bfloat16] * 3 + [torch.float32] and m.weight.dtype == torch.float32


def test_config_presets_and_json_round_trip():
    c = TinyConfig.smoke(depth=5)
    assert (c.width, c.depth) == (3, 5) and TinyConfig.full() == TinyConfig()
    assert TinyConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert c.diff(TinyConfig()) == {"depth": (5, 2), "width": (3, 4)}
    with pytest.raises(ValueError, match="no field"):
        TinyConfig.from_dict({"width": 3, "colour": "red"})


def test_checkpoint_round_trip(tmp_path):
    m = Tiny(TinyConfig())
    save_checkpoint(m, tmp_path / "ck", meta={"steps": 3})
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["config.json", "model.safetensors"]
    m2 = load_checkpoint(Tiny(TinyConfig()), tmp_path / "ck")
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    assert load_config(tmp_path / "ck", TinyConfig) == TinyConfig()


def test_checkpoint_refuses_mismatch_and_says_what_differs(tmp_path):
    save_checkpoint(Tiny(TinyConfig()), tmp_path)
    fresh = Tiny(TinyConfig(depth=3))
    before = [p.clone() for p in fresh.parameters()]
    with pytest.raises(ValueError, match=r"depth.*\(3, 2\)"):
        load_checkpoint(fresh, tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(before, fresh.parameters()))  # nothing half-loaded
    bare = nn.Linear(4, 5)  # no config: shapes are still checked
    with pytest.raises(ValueError, match="shape"):
        load_checkpoint(nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 4)), tmp_path)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_checkpoint(bare, tmp_path / "missing")


def test_checkpoint_has_no_pickle(tmp_path):
    save_checkpoint(Tiny(TinyConfig()), tmp_path)
    raw = (tmp_path / "model.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8:8 + header_len])  # safetensors: a JSON header, then raw tensor bytes


def test_progress_and_n_params(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert list(progress(range(3))) == [0, 1, 2]
    assert n_params(nn.Linear(3, 2)) == 8


@pytest.mark.parametrize("steps", [1, 3, 9, 10, 11, 40, 1000])
def test_one_cycle_runs_any_length_and_never_exceeds_the_peak(steps):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.5)
    sched, rates = one_cycle(opt, 0.5, steps), []
    for _ in range(steps): rates.append(opt.param_groups[0]["lr"]); opt.step(); sched.step()
    assert max(rates) <= 0.5 + 1e-9
    if steps >= 10: assert rates[0] < 0.5 * 0.1 and rates[-1] < 0.01 and max(rates) > 0.49  # warm-up, peak, decay


def test_one_cycle_rejects_no_steps():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.5)
    with pytest.raises(ValueError, match="steps"):
        one_cycle(opt, 0.5, 0)


def test_train_loop_is_the_hand_written_adamw_loop():
    torch.manual_seed(0); xs = torch.randn(64, 3); ys = xs @ torch.tensor([1.0, -2.0, 0.5]) + 0.3
    def batches():
        g = torch.Generator().manual_seed(1)
        while True:
            idx = torch.randint(64, (16,), generator=g); yield xs[idx], ys[idx]
    torch.manual_seed(2); a = nn.Linear(3, 1)
    b = nn.Linear(3, 1); b.load_state_dict(a.state_dict())
    mse = lambda m, batch: (m(batch[0])[:, 0] - batch[1]).pow(2).mean()
    logged = train_loop(a, batches(), mse, 30, 0.05, weight_decay=0.01, clip=0.5)
    opt = torch.optim.AdamW(b.parameters(), lr=0.05, weight_decay=0.01, betas=(0.9, 0.95))
    sched, it, by_hand = one_cycle(opt, 0.05, 30), batches(), []
    for _ in range(30):
        loss = mse(b, next(it)); opt.zero_grad(); loss.backward()
        nn.utils.clip_grad_norm_(b.parameters(), 0.5); opt.step(); sched.step(); by_hand.append(loss.item())
    assert logged == by_hand and all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not a.training


def test_train_loop_logs_a_second_value_and_trains_only_given_params():
    m = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1)); frozen = m[0].weight.detach().clone()
    def forever():
        while True: yield torch.ones(4, 2)
    logged = train_loop(m, forever(), lambda m, x: (m(x).pow(2).mean(), 7.0), 5, 0.1, params=m[1].parameters())
    assert logged == [7.0] * 5 and torch.equal(m[0].weight, frozen) and not m.training


@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_train_loop_refuses_bad_steps(steps):
    with pytest.raises(ValueError, match="steps"): train_loop(nn.Linear(1, 1), iter([]), None, steps, 0.1)


def test_eval_mode_restores_every_submodule_even_after_an_error():
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.Sequential(nn.Dropout(0.1))).train()
    net[2].eval()
    before = [m.training for m in net.modules()]
    with pytest.raises(KeyError):
        with eval_mode(net):
            assert not any(m.training for m in net.modules())
            raise KeyError("boom")
    assert [m.training for m in net.modules()] == before


def test_load_model_builds_from_the_stored_config_in_eval_mode(tmp_path):
    m = Tiny(TinyConfig(width=6)).train()
    save_checkpoint(m, tmp_path / "m")
    back = load_model(Tiny, TinyConfig, tmp_path / "m")
    assert back.config == m.config and not back.training
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), m.state_dict().values()))


def test_atomic_writes_keep_the_permissions_of_a_plain_write(tmp_path):
    import os
    from argen_lit.core import write_atomic
    mask = os.umask(0o022); os.umask(0o022)
    try:
        write_atomic(tmp_path / "a.txt", "x"); save_checkpoint(Tiny(TinyConfig()), tmp_path / "ckpt")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
        assert (tmp_path / "ckpt").stat().st_mode & 0o777 == 0o755
        os.chmod(tmp_path / "a.txt", 0o600); write_atomic(tmp_path / "a.txt", "y")  # an existing file keeps its mode
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o600
    finally: os.umask(mask)
