import pytest
import torch
from argen_lit.core import make_generator
from argen_lit.eval import count_forward_passes
from argen_lit.masked import mask_id, sample_masked
from argen_lit.orders import (DIRECTIONS, FineConfig, FinePredictor, HiMARConfig, HiMARPrior, MicroConfig, MicroPrior, NARConfig,
                              NARPrior, ShuffleConfig, ShufflePrior, XARConfig, XARPrior, coarse_labels, fit_ctf, fit_himar,
                              fit_meissonic, fit_nar, fit_shuffle, fit_xar, ink, kmeans, micro_loss, nar_loss, nar_parents,
                              orders_config, pivot_ids, ring_order, sample_ctf, sample_himar, sample_micro, sample_nar,
                              sample_shuffle, sample_xar, shuffle_loss, shuffle_windows, training_speed, unshuffle_windows,
                              xar_loss, xar_units)
from argen_lit.recipes import get_budget, prior_config
from argen_lit.transformer import Transformer
from argen_lit.vq import Tokenizer, TokenizerConfig

B = get_budget("smoke")


def count_calls(model):
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    return calls


@pytest.mark.parametrize("start, rings", [((0, 0), 13), ((3, 3), 7), ((1, 5), 11), ((6, 6), 13)])
def test_rings_follow_manhattan_distance_and_parents_are_adjacent(start, rings):
    order, ring = ring_order(7, 7, start)
    assert sorted(order.tolist()) == list(range(49)) and len(torch.bincount(ring)) == rings
    r, c = torch.arange(49) // 7, torch.arange(49) % 7
    assert torch.equal(ring, (r - start[0]).abs() + (c - start[1]).abs())
    assert (ring[order][1:] >= ring[order][:-1]).all()                       # nearest rings first
    parent, direction = nar_parents(7, 7, start)
    assert (parent < 0).sum() == 1 and parent[start[0] * 7 + start[1]] == -1 and DIRECTIONS[0] == "start"
    child = torch.arange(49)[parent >= 0]
    step = {1: (0, 1), 2: (0, -1), 3: (1, 0), 4: (-1, 0)}                   # right, left, down, up: child - parent
    for q in child.tolist():
        p = parent[q].item()
        assert (q // 7 - p // 7, q % 7 - p % 7) == step[direction[q].item()] and ring[p] == ring[q] - 1
    for bad in ((7, 0), (0, -1), (1.0, 2), (3,), "centre"):
        with pytest.raises(ValueError, match="start"): ring_order(7, 7, bad)


@pytest.fixture(scope="module")
def nar():
    torch.manual_seed(0)
    return NARPrior(orders_config(NARConfig, B, 64, 50, start=(3, 3))).eval()


def test_a_ring_reads_only_the_rings_before_it(nar):
    ids, y = torch.randint(64, (2, 49)), torch.tensor([1, 8])
    base = nar.teacher_logits(ids, y)
    ring = ring_order(7, 7, (3, 3))[1][nar.order]
    for r in range(nar.n_passes):
        poked = ids.clone(); cells = nar.order[ring == r]
        poked[:, cells] = (poked[:, cells] + 1) % 64
        delta = (nar.teacher_logits(poked, y) - base).abs().amax((0, 2))
        assert delta[ring <= r].max() == 0
        if r + 1 < nar.n_passes: assert delta[ring == r + 1].min() > 0


def test_nar_trains_under_bf16_autocast(nar):
    ids, y = torch.randint(64, (2, 49)), torch.tensor([1, 8])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nar_loss(nar, ids, y)
    assert torch.isfinite(loss)


def test_nar_sampling_is_the_model_ring_by_ring_and_by_seed(nar):
    y = torch.arange(6)
    calls = count_calls(nar)
    greedy = sample_nar(nar, y, temperature=0)
    assert len(calls) == nar.n_passes == 7                                     # one pass per ring
    assert torch.equal(nar.teacher_logits(greedy, y).argmax(-1), greedy[:, nar.order])
    a = sample_nar(nar, y, generator=make_generator(0))
    assert torch.equal(a, sample_nar(nar, y, generator=make_generator(0))) and not torch.equal(a, sample_nar(nar, y, generator=make_generator(1)))
    assert torch.isfinite(nar_loss(nar, a, y))
    with pytest.raises(ValueError, match="ids"): nar.teacher_logits(a + 64, y)
    with pytest.raises(ValueError, match="labels"): sample_nar(nar, torch.tensor([1.5]))


@pytest.mark.parametrize("h, w, window", [(7, 7, 2), (4, 4, 2), (5, 3, 2), (6, 6, 3), (7, 7, 1)])
def test_shuffle_round_trips_exactly(h, w, window):
    ids = torch.randint(100, (3, h, w))
    windows = shuffle_windows(ids, window, -1)
    H, W = -(-h // window), -(-w // window)
    assert windows.shape == (3, H * W, window * window) and (windows < 0).sum() == 3 * (H * W * window * window - h * w)
    assert torch.equal(unshuffle_windows(windows, window, h, w), ids)
    with pytest.raises(ValueError, match="windows"): unshuffle_windows(windows[:, 1:], window, h, w)


def test_token_shuffle_draws_a_window_per_pass_never_padding():
    torch.manual_seed(0)
    m = ShufflePrior(orders_config(ShuffleConfig, B, 0, 17, grid=(4, 4), n_codes=64)).eval()
    y = torch.arange(5)
    calls = count_calls(m)
    greedy = sample_shuffle(m, y, temperature=0)
    assert len(calls) == m.n_windows == 16 and greedy.shape == (5, 7, 7) and greedy.max() < 64
    w = shuffle_windows(greedy, 2, m.pad_id)
    real = w != m.pad_id
    assert torch.equal(m.teacher_logits(greedy, y).argmax(-1)[real], w[real])
    a = sample_shuffle(m, y, generator=make_generator(0), cfg_scale=2.0)
    assert torch.equal(a, sample_shuffle(m, y, generator=make_generator(0), cfg_scale=2.0))
    assert torch.isfinite(shuffle_loss(m, a, y))
    with pytest.raises(ValueError, match="vocab_size"): ShufflePrior(orders_config(ShuffleConfig, B, 64, 17, grid=(4, 4)))
    with pytest.raises(ValueError, match="d_model"): ShufflePrior(orders_config(ShuffleConfig, B, 0, 17, grid=(4, 4), window=3))
    with pytest.raises(ValueError, match="grid"): ShufflePrior(orders_config(ShuffleConfig, B, 0, 17, n_codes=64))        # 7x7 default
    with pytest.raises(ValueError, match="max_seq_len"): ShufflePrior(orders_config(ShuffleConfig, B, 0, 16, grid=(4, 4)))


def test_kmeans_partitions_and_ctf_draws_codes_of_the_drawn_labels():
    torch.manual_seed(0)
    x = torch.randn(300, 8)
    cent, assign = kmeans(x, 12, seed=3)
    assert cent.shape == (12, 8) and set(assign.tolist()) == set(range(12))     # every cluster kept
    assert torch.equal(assign, torch.cdist(x, cent).argmin(1))
    assert torch.equal(kmeans(x, 12, seed=3)[1], assign)
    for bad in (0, 301, 2.5):
        with pytest.raises(ValueError, match="k:"): kmeans(x, bad)
    with pytest.raises(ValueError, match="distinct rows"): kmeans(torch.zeros(5, 2), 2)
    twin = torch.cat([torch.zeros(4, 2), torch.ones(4, 2) * 5, torch.tensor([[5.0, 5.1]])])
    assert set(kmeans(twin, 3, iters=2)[1].tolist()) == {0, 1, 2}       # no cluster left empty
    tok = Tokenizer(TokenizerConfig.smoke(quantizer="ema", n_codes=256)).eval()
    label_of = coarse_labels(tok, 8)
    assert label_of.shape == (256,) and set(label_of.tolist()) == set(range(8))  # a partition of the codebook
    fine = FinePredictor(orders_config(FineConfig, B, 256, 50, n_coarse=8), label_of).eval()
    coarse_prior = Transformer(prior_config(B, 8, 50)).eval()
    y = torch.arange(10)
    calls = count_calls(fine)
    codes = sample_ctf(coarse_prior, fine, y, cfg_scale=2.0, generator=make_generator(0))
    assert codes.shape == (10, 49) and len(calls) == 1                          # every fine code in one pass
    from argen_lit.transformer import generate
    coarse = generate(coarse_prior, 49, y, cfg_scale=2.0, generator=make_generator(0))
    assert torch.equal(label_of[codes], coarse)                                # each code inside its drawn label's cluster
    with pytest.raises(ValueError, match="labels_of_codes"): FinePredictor(fine.config, label_of[:10])
    with pytest.raises(ValueError, match="coarse_prior"): sample_ctf(Transformer(prior_config(B, 9, 50)), fine, y)


def test_training_speed_times_each_model_on_the_same_batches():
    torch.manual_seed(0)
    m = ShufflePrior(orders_config(ShuffleConfig, B, 0, 17, grid=(4, 4), n_codes=64))
    ids, y = torch.randint(64, (32, 7, 7)), torch.randint(10, (32,))
    speed = training_speed({"a": (m, shuffle_loss)}, ids, y, batch_size=8, steps=2, rounds=1)
    assert set(speed) == {"a"} and speed["a"] > 0 and not m.training
    with pytest.raises(ValueError, match="steps"): training_speed({"a": (m, shuffle_loss)}, ids, y, steps=0)


@pytest.mark.parametrize("side, size, unit, shape", [(7, 2, "cell", (16, 4)), (7, 2, "subsample", (4, 16)), (6, 3, "cell", (4, 9)),
                                                   (5, 1, "cell", (25, 1))])
def test_xar_units_cover_the_padded_grid_once(side, size, unit, shape):
    units = xar_units(side, size, unit)
    P = shape[0] * shape[1]
    assert tuple(units.shape) == shape and sorted(units.flatten().tolist()) == list(range(P))
    if unit == "cell":        # a cell's tokens are size x size neighbours
        W = int(P ** 0.5)
        r, c = units // W, units % W
        assert ((r.amax(1) - r.amin(1)) < size).all() and ((c.amax(1) - c.amin(1)) < size).all()
    for bad in ("scale", "", None):
        with pytest.raises(ValueError, match="unit"): xar_units(7, 2, bad)
    with pytest.raises(ValueError, match="size"): xar_units(7, 0, "cell")


def xar_model(unit="cell", noise=0.0):
    torch.manual_seed(0)
    return XARPrior(orders_config(XARConfig, B, 66, 65, grid=(8, 8), n_codes=64, unit=unit, noise=noise, state_sizes=(65,))).eval()


@pytest.mark.parametrize("unit", ["cell", "subsample"])
def test_an_xar_unit_reads_only_the_units_before_it(unit):
    m = xar_model(unit)
    ids, y = torch.randint(64, (2, 7, 7)), torch.tensor([1, 8])
    base = m.teacher_logits(ids, y)
    U, k = m.units.shape
    for u in range(U - 1):
        poked = m.padded(ids).clone(); cells = m.units[u]
        poked[:, cells] = torch.where(m.is_pad[cells], poked[:, cells], (poked[:, cells] + 1) % 64)
        delta = (m.teacher_logits(poked.reshape(2, 8, 8)[:, :7, :7], y) - base).abs().amax((0, 2)).reshape(U, k).amax(1)
        assert delta[:u + 1].max() == 0 and delta[u + 1:].min() > 0


@pytest.mark.parametrize("unit", ["cell", "subsample"])
def test_xar_sampling_draws_a_unit_per_pass_the_model_s_argmax_and_by_seed(unit):
    m = xar_model(unit)
    y = torch.tensor([3, 7, 0])
    calls = count_calls(m)
    greedy = sample_xar(m, y, temperature=0.0, cfg_scale=2.0)
    assert len(calls) == m.n_passes and greedy.shape == (3, 7, 7) and greedy.max() < 64
    plain = sample_xar(m, y, temperature=0.0)
    target = m.padded(plain)[:, m.units.flatten()]
    real = target != m.pad_id
    assert torch.equal(m.teacher_logits(plain, y)[..., :64].argmax(-1)[real], target[real])
    a, b = (sample_xar(m, y, generator=make_generator(s)) for s in (1, 1))
    assert torch.equal(a, b) and not torch.equal(a, sample_xar(m, y, generator=make_generator(2)))


def test_noisy_context_corrupts_only_the_context_and_only_while_training():
    def model(noise):
        torch.manual_seed(0)
        return XARPrior(orders_config(XARConfig, B, 66, 65, grid=(8, 8), n_codes=64, noise=noise, state_sizes=(65,),
                                      dropout=0.0, label_dropout=0.0))
    ids, y = torch.randint(64, (4, 7, 7)), torch.arange(4)
    noisy, clean = model(1.0), model(0.0)
    losses = lambda m: [(torch.manual_seed(s), xar_loss(m, ids, y).item())[1] for s in (1, 2)]
    a, b = losses(clean.train())
    assert a == b                                                   # no noise: the same loss whatever the seed
    a, b = losses(noisy.train())
    assert a != b                                                   # noise: the context differs from seed to seed
    a, b = losses(noisy.eval())
    assert a == b                                                   # sampling-time (eval) loss: clean context
    k = noisy.units.shape[1]
    with torch.no_grad():
        hit, plain = noisy.teacher_logits(ids, y, noise=torch.ones(4)), noisy.teacher_logits(ids, y)
    assert torch.equal(hit[:, :k], plain[:, :k]) and not torch.allclose(hit[:, k:], plain[:, k:])   # unit 0 reads no context


def test_xar_refuses_a_config_that_does_not_fit_its_units():
    for kw, name in (({"vocab_size": 64}, "vocab_size"), ({"max_seq_len": 50}, "max_seq_len"), ({"state_sizes": (64,)}, "state_sizes"),
                     ({"noise": 1.5}, "noise")):
        base = dict(grid=(8, 8), n_codes=64, state_sizes=(65,))
        vocab, length = kw.pop("vocab_size", 66), kw.pop("max_seq_len", 65)
        with pytest.raises(ValueError, match=name): XARPrior(orders_config(XARConfig, B, vocab, length, **{**base, **kw}))
    with pytest.raises(ValueError, match="ids"): xar_model().padded(torch.zeros(2, 6, 6, dtype=torch.long))


def himar_models():
    torch.manual_seed(0)
    piv = Transformer(prior_config(B, 65, 17, grid=(4, 4), abs_pos=True)).eval()
    dense = HiMARPrior(orders_config(HiMARConfig, B, 65, 66, grid=(7, 7), abs_pos=True, pivot_side=4)).eval()
    return piv, dense


def test_pivots_are_the_tokenizer_s_codes_of_the_shrunk_digit():
    torch.manual_seed(0)
    tok = Tokenizer(TokenizerConfig.smoke(quantizer="ema", n_codes=32)).eval()
    x = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    p = pivot_ids(tok, x)
    assert p.shape == (3, 4, 4) and p.max() < 32
    assert torch.equal(pivot_ids(tok, x, batch_size=1), p) and pivot_ids(tok, x, side=2).shape == (3, 2, 2)
    with pytest.raises(ValueError, match="side"): pivot_ids(tok, x, side=8)


def test_hi_mar_keeps_its_pivots_and_revealed_tokens_and_reads_the_pivots():
    piv, dense = himar_models()
    y = torch.tensor([2, 5])
    calls_p, calls_d = count_calls(piv), count_calls(dense)
    out, pivots = sample_himar(piv, dense, y, pivot_steps=3, steps=5, generator=make_generator(0), return_pivots=True, cfg_scale=2.0)
    assert len(calls_p) == 3 and len(calls_d) == 5 and out.shape == (2, 49) and pivots.shape == (2, 16)
    assert out.max() < 64 and pivots.max() < 64
    again = sample_himar(piv, dense, y, pivot_steps=3, steps=5, generator=make_generator(0), cfg_scale=2.0)
    assert torch.equal(out, again)
    _, hist = sample_masked(dense, y, steps=4, prefix=pivots, generator=make_generator(1), return_history=True)
    mid = mask_id(dense)
    for h0, h1 in zip(hist, hist[1:]): assert torch.equal(h1[h0 != mid], h0[h0 != mid])
    x = torch.full((2, 49), mid)
    poked = pivots.clone(); poked[:, 0] = (poked[:, 0] + 1) % 64
    with torch.no_grad():
        assert (dense(torch.cat([poked, x], 1), y, mask="full") - dense(torch.cat([pivots, x], 1), y, mask="full"))[:, 17:].abs().max() > 0
    with pytest.raises(ValueError, match="pivot_prior"): sample_himar(Transformer(prior_config(B, 65, 10, grid=(3, 3), abs_pos=True)), dense, y)
    with pytest.raises(ValueError, match="prefix"): sample_masked(dense, y, prefix=torch.full((2, 16), mid))   # [MASK] is not a pivot
    with pytest.raises(ValueError, match="prefix"): sample_masked(dense, y, prefix=pivots[:1])
    with pytest.raises(ValueError, match="max_seq_len"): HiMARPrior(orders_config(HiMARConfig, B, 65, 60, grid=(7, 7), abs_pos=True, pivot_side=4))
    with pytest.raises(ValueError, match="pivot_side"): HiMARPrior(orders_config(HiMARConfig, B, 65, 50, grid=(7, 7), abs_pos=True, pivot_side=0))
    with pytest.raises(ValueError, match="prefix="): sample_masked(dense, y)                   # no pivots: refused, not guessed
    with pytest.raises(ValueError, match="prefix="): sample_masked(dense, y, prefix=pivots[:, :3])
    with pytest.raises(ValueError, match="prefix"): sample_masked(dense, y, prefix=[[1, 2]])


def micro_model():
    torch.manual_seed(0)
    return MicroPrior(orders_config(MicroConfig, B, 65, 50, grid=(7, 7), abs_pos=True, ink_edges=(0.1, 0.15, 0.2), state_sizes=(50, 4))).eval()


def test_meissonic_conditions_count_the_masks_and_carry_the_level_everywhere():
    m = micro_model()
    x = torch.randint(64, (3, 49)); x[0, :7] = 64; x[2] = 64
    st = m.conditions(x, torch.tensor([0, 1, 3]))
    assert st.shape == (3, 50, 2) and st[:, :, 0].tolist() == [[7] * 50, [0] * 50, [49] * 50] and (st[:, :, 1].T == torch.tensor([0, 1, 3])).all()
    imgs = torch.zeros(4, 1, 28, 28, dtype=torch.uint8); imgs[1, :, :3] = 255; imgs[2, :, :5] = 255; imgs[3, :, :20] = 255
    assert torch.allclose(ink(imgs), torch.tensor([0, 3, 5, 20]) / 28) and m.ink_level(imgs).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="level"): m.conditions(x, torch.tensor([0, 1, 4]))
    with pytest.raises(TypeError, match="uint8"): ink(torch.rand(2, 1, 28, 28))
    only = lambda conds: MicroPrior(orders_config(MicroConfig, B, 65, 50, grid=(7, 7), ink_edges=(0.1, 0.15, 0.2), state_sizes=(50, 4),
                                                  conditions=conds))
    assert (only(("rate",)).conditions(x, torch.tensor([0, 1, 3]))[..., 1] == 0).all()          # a left-out condition is held at 0
    assert torch.equal(only(("ink",)).conditions(x, torch.tensor([0, 1, 3]))[:, 0], torch.tensor([[0, 0], [0, 1], [0, 3]]))
    for bad in ((), ("rate", "size")):
        with pytest.raises(ValueError, match="conditions"): only(bad)
    for edges in ((0.1, 0.1, 0.2), (0.1, float("nan")), ("a",)):
        with pytest.raises(ValueError, match="ink_edges"):
            MicroPrior(orders_config(MicroConfig, B, 65, 50, grid=(7, 7), ink_edges=edges, state_sizes=(50, len(edges) + 1)))
    with pytest.raises(ValueError, match="ink_edges"):
        MicroPrior(orders_config(MicroConfig, B, 65, 50, grid=(7, 7), ink_edges=(0.2, 0.1), state_sizes=(50, 3)))
    with pytest.raises(ValueError, match="state_sizes"):
        MicroPrior(orders_config(MicroConfig, B, 65, 50, grid=(7, 7), ink_edges=(0.1, 0.2), state_sizes=(49, 3)))


def test_meissonic_sampling_follows_the_level_and_the_seed():
    m = micro_model()
    y = torch.tensor([1, 1, 4])
    a = sample_micro(m, y, level=torch.tensor([0, 0, 0]), generator=make_generator(0), cfg_scale=2.0, steps=4)
    assert a.shape == (3, 49) and a.max() < 64
    assert torch.equal(a, sample_micro(m, y, level=torch.tensor([0, 0, 0]), generator=make_generator(0), cfg_scale=2.0, steps=4))
    assert not torch.equal(a, sample_micro(m, y, level=torch.tensor([3, 3, 3]), generator=make_generator(0), cfg_scale=2.0, steps=4))
    m.train()
    packed = torch.cat([torch.randint(64, (3, 49)), torch.tensor([[0], [2], [3]])], 1)
    assert micro_loss(m, packed, y, make_generator(0)).isfinite()


@pytest.mark.parametrize("fit, passes", [(fit_nar, 7), (fit_shuffle, 16), (fit_ctf, 50), (fit_xar, 16), (fit_himar, 8), (fit_meissonic, 8)])
def test_the_entries_train_save_load_back_sample_by_seed_and_count_their_passes(tmp_path, entry_round_trip, fit, passes):
    first, again, _ = entry_round_trip(fit)
    assert not torch.equal(again.sample(torch.arange(4), make_generator(0)), again.sample(torch.arange(4), make_generator(1)))
    with count_forward_passes(again.pass_module) as c: again.sample(torch.arange(4), make_generator(0))
    assert c["n"] == passes                                                 # every stage's passes, as the leaderboard counts them
