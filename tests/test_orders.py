import pytest
import torch
from argen_lit.core import make_generator
from argen_lit.orders import (DIRECTIONS, FineConfig, FinePredictor, NARConfig, NARPrior, ShuffleConfig, ShufflePrior, coarse_labels,
                              fit_ctf, fit_nar, fit_shuffle, kmeans, nar_loss, nar_parents, orders_config, ring_order,
                              sample_ctf, sample_nar, sample_shuffle, shuffle_loss, shuffle_windows, training_speed,
                              unshuffle_windows)
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


@pytest.mark.parametrize("fit", [fit_nar, fit_shuffle, fit_ctf])
def test_the_entries_train_save_load_back_and_sample_by_seed(tmp_path, entry_round_trip, fit):
    first, again, _ = entry_round_trip(fit)
    assert not torch.equal(again.sample(torch.arange(4), make_generator(0)), again.sample(torch.arange(4), make_generator(1)))
