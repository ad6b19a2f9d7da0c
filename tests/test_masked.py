import math
import pytest
import torch
from argen_lit.core import make_generator
from argen_lit.eval import count_forward_passes
from argen_lit.masked import (cosine_schedule, mask_id, mask_ratios, masked_counts, masked_loss, random_masks,
                              sample_masked, train_masked)
from argen_lit.transformer import Transformer, TransformerConfig


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Transformer(TransformerConfig.smoke(vocab_size=33, max_seq_len=50, rope="2d", grid=(7, 7))).eval()


def test_cosine_schedule_falls_from_one_to_zero():
    g = cosine_schedule(torch.linspace(0, 1, 50))
    assert g[0] == 1 and abs(g[-1]) < 1e-6 and (g[1:] < g[:-1]).all()


@pytest.mark.parametrize("n", [1, 7, 49, 256])
def test_masked_counts_fall_to_zero_and_reveal_the_whole_grid(n):
    for T in range(1, min(n, 40) + 1):
        counts = masked_counts(n, T)
        assert len(counts) == T and counts[-1] == 0
        revealed = [a - b for a, b in zip([n] + counts, counts)]
        assert min(revealed) >= 1 and sum(revealed) == n


def test_masked_counts_follow_the_cosine_curve():
    assert masked_counts(49, 8) == [math.floor(49 * math.cos(math.pi / 2 * t / 8)) for t in range(1, 9)]


@pytest.mark.parametrize("steps", [0, -1, 50, 2.0])
def test_bad_step_counts_are_refused(model, steps):
    with pytest.raises(ValueError, match="steps"): masked_counts(49, steps)
    with pytest.raises(ValueError, match="steps"): sample_masked(model, torch.arange(2), steps=steps)


def test_random_masks_cover_ceil_ratio_positions():
    m = random_masks(torch.tensor([0.0, 0.1, 0.5, 1.0]), 49, make_generator(0))
    assert m.sum(1).tolist() == [1, 5, 25, 49]


def test_mar_ratios_stay_in_their_truncation_range():
    r = mask_ratios(10_000, "mar", make_generator(0))
    assert r.min() >= 0.7 and r.max() <= 1.0 and 0.85 < r.mean() < 0.9
    with pytest.raises(ValueError, match="kind"): mask_ratios(3, "linear")


@pytest.mark.parametrize("order", ["confidence", "random"])
@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_revealed_tokens_never_change_and_no_mask_is_left(model, order, cfg):
    ids, hist = sample_masked(model, torch.arange(5), steps=8, order=order, cfg_scale=cfg, generator=make_generator(0),
                              return_history=True)
    mid = mask_id(model)
    assert [int((h == mid).sum(1)[0]) for h in hist] == masked_counts(49, 8)
    for a, b in zip(hist, hist[1:]):
        known = a != mid
        assert torch.equal(b[known], a[known])
    assert torch.equal(ids, hist[-1]) and ids.max() < mid and ids.min() >= 0


def test_one_forward_pass_per_step_even_with_guidance(model):
    for T in (1, 4, 8):
        with count_forward_passes(model) as c: sample_masked(model, torch.arange(3), steps=T, cfg_scale=2.0)
        assert c["n"] == T


def test_same_seed_same_samples(model):
    a = sample_masked(model, torch.arange(4), generator=make_generator(3))
    b = sample_masked(model, torch.arange(4), generator=make_generator(3))
    c = sample_masked(model, torch.arange(4), generator=make_generator(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_attention_is_bidirectional(model):
    ids = torch.randint(0, 32, (2, 49), generator=make_generator(0))
    moved = ids.clone(); moved[:, -1] = (moved[:, -1] + 1) % 32   # change the last token only
    d = (model(ids, mask="full") - model(moved, mask="full")).abs().amax(-1)
    assert (d[:, :-1] > 1e-6).all()   # every earlier position sees it


@pytest.mark.parametrize("abs_pos", [True, False])
def test_training_lowers_the_masked_loss_on_a_learnable_pattern(abs_pos):
    torch.manual_seed(0)
    m = Transformer(TransformerConfig.smoke(vocab_size=17, max_seq_len=50, rope="2d", grid=(7, 7), abs_pos=abs_pos))
    labels = torch.arange(64) % 4
    tokens = (labels[:, None] * 4 + torch.arange(49) % 4)   # the class and the position fix every token
    before = masked_loss(m.eval(), tokens, labels, generator=make_generator(0)).item()
    train_masked(m, tokens, labels, steps=150, batch_size=32, lr=3e-3)
    after = masked_loss(m.eval(), tokens, labels, generator=make_generator(0)).item()
    if abs_pos: assert after < 0.4 * before
    else: assert after > math.log(4) - 0.1   # RoPE alone: the class is learnt, the position (1 of 4) is not


def test_bad_input_is_refused(model):
    with pytest.raises(ValueError, match="tokens"):   # the [MASK] id is not a training token
        train_masked(model, torch.full((4, 49), mask_id(model)), torch.arange(4), steps=1)
    with pytest.raises(ValueError, match="kind"): train_masked(model, torch.zeros(4, 49, dtype=torch.long), steps=1, kind="x")
    with pytest.raises(ValueError, match="order"): sample_masked(model, torch.arange(2), order="raster")
    with pytest.raises(ValueError, match="cfg_scale"): sample_masked(model, torch.arange(2), cfg_scale=-1.0)
    with pytest.raises(ValueError, match="noise"): sample_masked(model, torch.arange(2), noise=-1.0)
    with pytest.raises(ValueError, match="n_tokens"): sample_masked(model, torch.arange(2), n_tokens=60)


def test_masked_counts_take_the_ratio_first():
    # cos(pi/2 * 2/3) is exactly 1/2: an even map keeps exactly half its tokens masked at (t+1)/T = 2/3. Computing
    # (pi/2 (t+1))/T instead rounds just below 1/2 for some (N, T) and floors N/2 to N/2 - 1 (e.g. N=64, T=39).
    for n in (6, 10, 64, 100, 256, 1024):
        for steps in range(3, min(n, 64) + 1, 3):
            t = 2 * steps // 3 - 1
            if (steps - 1 - t) < n // 2 < n - t:  # not clamped by the reveal-one-per-step rule
                assert masked_counts(n, steps)[t] == n // 2, (n, steps)


def test_a_prefix_is_always_seen_never_masked_never_scored_and_checked():
    torch.manual_seed(0)
    m = Transformer(TransformerConfig.smoke(vocab_size=33, max_seq_len=55, rope="1d", abs_pos=True)).eval()
    ids, prefix, y = torch.randint(32, (3, 49)), torch.randint(32, (3, 5)), torch.arange(3)
    seen = []
    m.register_forward_hook(lambda mod, args, kw, out: seen.append(args[0].clone()), with_kwargs=True)
    loss = masked_loss(m, ids, y, generator=make_generator(0), prefix=prefix)
    assert loss.isfinite() and torch.equal(seen[-1][:, :5], prefix) and seen[-1].shape == (3, 54)
    out, hist = sample_masked(m, y, steps=4, n_tokens=49, prefix=prefix, generator=make_generator(0), cfg_scale=2.0, return_history=True)
    assert out.shape == (3, 49) and all(torch.equal(x[:3, :5], prefix) for x in seen[-4:]) and (hist[-1] != mask_id(m)).all()
    x = torch.full((3, 49), mask_id(m))
    with torch.no_grad():                                                   # the map's logits depend on the prefix
        assert (m(torch.cat([(prefix + 1) % 32, x], 1), y, mask="full") - m(torch.cat([prefix, x], 1), y, mask="full"))[:, 6:].abs().max() > 0
    with pytest.raises(ValueError, match="prefix"): masked_loss(m, ids, y, prefix=torch.full((3, 5), 32))   # [MASK] is no prefix
    with pytest.raises(ValueError, match="prefix"): masked_loss(m, ids, y, prefix=prefix[:2])
    with pytest.raises(ValueError, match="n_tokens"): sample_masked(m, y, steps=4, n_tokens=49, prefix=torch.randint(32, (3, 6)))
    with pytest.raises(ValueError, match="prefix"): train_masked(m, torch.randint(32, (8, 10)), steps=1, prefix=10)
    bits = train_masked(m.train(), torch.cat([prefix, ids], 1).repeat(4, 1), y.repeat(4), steps=2, batch_size=4, prefix=5)
    assert len(bits) == 2 and all(math.isfinite(b) for b in bits)


def test_states_are_computed_from_the_masked_input_and_doubled_for_guidance():
    torch.manual_seed(0)
    m = Transformer(TransformerConfig.smoke(vocab_size=33, max_seq_len=50, rope="2d", grid=(7, 7), state_sizes=(50,))).eval()
    calls = []
    def states(x):
        calls.append(x.clone())
        return (x == mask_id(m)).sum(1)[:, None, None].expand(-1, x.shape[1] + 1, 1)
    masked_loss(m, torch.randint(32, (2, 49)), torch.arange(2), generator=make_generator(0), states=states)
    assert calls[-1].shape == (2, 49) and (calls[-1] == mask_id(m)).any()
    sample_masked(m, torch.arange(2), steps=3, cfg_scale=3.0, states=states, generator=make_generator(0))
    assert [int((c == mask_id(m)).sum(1)[0]) for c in calls[-3:]] == [49, *masked_counts(49, 3)[:2]] and calls[-1].shape == (2, 49)
