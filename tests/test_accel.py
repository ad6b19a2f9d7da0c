import pytest
import torch
from argen_lit.accel import StaticDecoder, code_neighbours, group_probs, speculative_jacobi, verify_window
from argen_lit.core import make_generator
from argen_lit.eval import chi2_two_sample, count_forward_passes, same_distribution, two_proportion_p
from argen_lit.transformer import GrowingKVCache, Transformer, TransformerConfig, generate, token_probs


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = Transformer(TransformerConfig.smoke(vocab_size=16, max_seq_len=50, rope="2d", grid=(7, 7))).eval()
    with torch.no_grad():  # a peaked model, so that greedy choices are far from ties
        m.head.weight.mul_(20)
    return m


LABELS = torch.arange(6) % 10


@pytest.mark.parametrize("cfg", [1.0, 2.0])
def test_every_cache_gives_the_same_greedy_tokens(model, cfg):
    ref = generate(model, 49, LABELS, cfg_scale=cfg, temperature=0)
    for cache in ("none", "growing"):
        assert torch.equal(generate(model, 49, LABELS, cfg_scale=cfg, temperature=0, cache=cache), ref)


def test_every_cache_gives_the_same_seeded_samples(model):
    ref = generate(model, 20, LABELS, generator=make_generator(0))
    for cache in ("none", "growing"):
        assert torch.equal(generate(model, 20, LABELS, generator=make_generator(0), cache=cache), ref)


@pytest.mark.parametrize("window", [1, 3, 8, 60])
@pytest.mark.parametrize("cfg", [1.0, 2.0])
def test_greedy_speculative_jacobi_returns_the_greedy_tokens(model, window, cfg):
    ref = generate(model, 49, LABELS, cfg_scale=cfg, temperature=0)
    st = {}
    out = speculative_jacobi(model, 49, LABELS, window=window, cfg_scale=cfg, temperature=0, generator=make_generator(1), stats=st)
    assert torch.equal(out, ref)
    with count_forward_passes(model) as c:
        speculative_jacobi(model, 49, LABELS, window=window, cfg_scale=cfg, temperature=0, generator=make_generator(1))
    assert c["n"] == st["passes"] <= 49


def whole_codebook_groups():
    "GSD groups for the 16-code test model in which one group holds every code."
    return code_neighbours(torch.randn(16, 4, generator=make_generator(0)), 16)


@pytest.mark.parametrize("cfg", [1.0, 2.0])
def test_greedy_grouped_decoding_with_a_gap_returns_the_greedy_tokens(model, cfg):
    # at temperature 0 a wrong guess has probability 0, and a gap below 1 keeps the model's choice out of its group
    ref = generate(model, 49, LABELS, cfg_scale=cfg, temperature=0)
    whole = whole_codebook_groups()
    for gap, rank in ((0.15, None), (0.15, 30), (0.99, 2)):
        out = speculative_jacobi(model, 49, LABELS, window=24, cfg_scale=cfg, temperature=0, generator=make_generator(1),
                                 groups=whole, group_gap=gap, group_rank=rank)
        assert torch.equal(out, ref)


def test_groups_of_one_are_plain_speculative_jacobi(model):
    a = speculative_jacobi(model, 49, LABELS, generator=make_generator(2))
    b = speculative_jacobi(model, 49, LABELS, generator=make_generator(2), groups=code_neighbours(torch.randn(16, 4), 1))
    assert torch.equal(a, b)


def test_group_gap_filters_the_group(model):
    whole = whole_codebook_groups()
    st = {}
    a = speculative_jacobi(model, 49, LABELS, generator=make_generator(2), groups=whole, stats=st)
    assert st["passes"] == 6                                                    # every guess passes: 9 tokens per pass
    b = speculative_jacobi(model, 49, LABELS, generator=make_generator(2), groups=whole, group_gap=2.0)
    assert torch.equal(a, b)                                                    # a gap above 1 filters nothing
    c = speculative_jacobi(model, 49, LABELS, generator=make_generator(2))
    d = speculative_jacobi(model, 49, LABELS, generator=make_generator(2), groups=whole, group_gap=1e-12)
    assert torch.equal(c, d)                                                    # only the guess itself counts: SJD


def test_group_rank_filters_the_group(model):
    whole = whole_codebook_groups()
    a = speculative_jacobi(model, 49, LABELS, generator=make_generator(2), groups=whole)
    b = speculative_jacobi(model, 49, LABELS, generator=make_generator(2), groups=whole, group_rank=16)
    assert torch.equal(a, b)                                                    # a window wider than the vocabulary: no filter
    c = speculative_jacobi(model, 49, LABELS, generator=make_generator(2))
    d = speculative_jacobi(model, 49, LABELS, generator=make_generator(2), groups=whole, group_rank=0)
    assert torch.equal(c, d)                                                    # rank window 0 leaves the guess alone: SJD
    st_narrow, st_wide = {}, {}
    speculative_jacobi(model, 49, LABELS, generator=make_generator(5), groups=whole, group_rank=2, stats=st_narrow)
    speculative_jacobi(model, 49, LABELS, generator=make_generator(5), groups=whole, group_rank=8, stats=st_wide)
    assert 6 <= st_wide["passes"] <= st_narrow["passes"] <= 49


def test_speculative_jacobi_is_seeded(model):
    a = speculative_jacobi(model, 49, LABELS, generator=make_generator(3))
    assert torch.equal(a, speculative_jacobi(model, 49, LABELS, generator=make_generator(3)))
    assert not torch.equal(a, speculative_jacobi(model, 49, LABELS, generator=make_generator(4)))


def test_speculative_jacobi_keeps_the_token_distribution():
    # a tiny model over 4 tokens: compare exact sampling and SJD marginals of each position over many draws
    torch.manual_seed(0)
    m = Transformer(TransformerConfig.smoke(vocab_size=4, max_seq_len=7, n_classes=1)).eval()
    with torch.no_grad(): m.head.weight.mul_(30)
    lab = torch.zeros(3000, dtype=torch.long)
    plain = generate(m, 6, lab, generator=make_generator(0))
    sjd = speculative_jacobi(m, 6, lab, window=4, generator=make_generator(1))
    t = same_distribution(plain, sjd, 4)
    assert t["bonferroni_min_p"] > 0.001


def test_verify_window_reproduces_p_and_a_wrong_residual_would_not():
    # five symbols, a window of one guess per row: the kept token of every row must follow p
    p, q, n = torch.tensor([0.40, 0.25, 0.15, 0.12, 0.08]), torch.tensor([0.10, 0.30, 0.30, 0.10, 0.20]), 20000
    g = make_generator(0)
    d = torch.multinomial(q, n, replacement=True, generator=g)[:, None]
    kept, m = verify_window(p.expand(n, 2, 5), q.expand(n, 1, 5), d, p[d], q[d], generator=g)
    direct = torch.multinomial(p, n, replacement=True, generator=g)
    assert kept.shape == (n, 1) and m == 0 and chi2_two_sample(kept[:, 0], direct, 5)[2] > 1e-3
    # the same test told that the guesses came from p (the residual is then empty and it redraws from p): caught
    wrong, _ = verify_window(p.expand(n, 2, 5), p.expand(n, 1, 5), d, p[d], q[d], generator=g)
    assert chi2_two_sample(wrong[:, 0], direct, 5)[2] < 1e-6


def test_verify_window_keeps_a_passed_window_and_its_free_token():
    p = torch.softmax(torch.randn(3, 5, 7, generator=make_generator(1)), -1)
    d = torch.zeros(3, 4, dtype=torch.long)
    ones = torch.ones(3, 4)
    kept, m = verify_window(p, p[:, :4], d, ones, ones, generator=make_generator(2))   # p(d) = q(d): every guess passes
    assert m == 4 and kept.shape == (3, 5) and torch.equal(kept[:, :4], d)
    kept, m = verify_window(p, p[:, :4], d, ones, ones, generator=make_generator(2), bonus=False)
    assert m == 4 and torch.equal(kept, d)                                            # the end of the sequence: no free token
    p[:, 4] = torch.nn.functional.one_hot(torch.tensor([6, 3, 5]), 7).float()          # the free token comes from p's last position
    kept, _ = verify_window(p, p[:, :4], d, ones, ones, generator=make_generator(2))
    assert kept[:, 4].tolist() == [6, 3, 5]


@pytest.mark.parametrize("batch", [1, 6])
def test_speculative_jacobi_reports_the_pass_of_every_token(model, batch):
    st = {}
    speculative_jacobi(model, 49, LABELS[:batch], window=8, generator=make_generator(3), stats=st)
    pass_of, drawn = st["pass_of_token"], st["drawn"]
    assert pass_of[0] == 1 and pass_of[-1] == st["passes"] and (pass_of.diff() >= 0).all() and (pass_of.diff() <= 1).all()
    assert st["passes"] - 1 <= int(drawn.sum()) <= st["passes"]                         # one drawn token per pass (the last may have none)
    assert all(drawn[pass_of == k][-1] or k == st["passes"] for k in range(1, st["passes"] + 1))  # a pass's drawn token is its last


def test_group_probs_of_single_codes_and_of_the_whole_codebook():
    pw = torch.softmax(torch.randn(2, 3, 16, generator=make_generator(0)), -1); qw = torch.full_like(pw, 1 / 16)
    d = pw.argmin(-1)
    alone, whole = code_neighbours(torch.randn(16, 4, generator=make_generator(1)), 1), torch.arange(16).expand(16, 16)
    pd, qd = group_probs(pw, qw, d, alone)
    assert torch.allclose(pd, pw.gather(-1, d[..., None])[..., 0]) and torch.allclose(qd, torch.full_like(qd, 1 / 16))
    pd, qd = group_probs(pw, qw, d, whole)
    assert torch.allclose(pd, torch.ones_like(pd)) and torch.allclose(qd, torch.ones_like(qd))
    pd_rank, _ = group_probs(pw, qw, d, whole, group_rank=0)                             # only the guess itself is near
    assert torch.allclose(pd_rank, pw.gather(-1, d[..., None])[..., 0])


def test_the_chi_square_check_detects_a_shift():
    g = make_generator(0)
    a = torch.multinomial(torch.tensor([0.25] * 4), 4000, replacement=True, generator=g)
    b = torch.multinomial(torch.tensor([0.31, 0.23, 0.23, 0.23]), 4000, replacement=True, generator=g)
    assert chi2_two_sample(a, b, 4)[2] < 1e-4
    c = torch.multinomial(torch.tensor([0.25] * 4), 4000, replacement=True, generator=g)
    assert chi2_two_sample(a, c, 4)[2] > 0.01
    assert two_proportion_p(500, 1000, 500, 1000) == pytest.approx(1.0) and two_proportion_p(900, 1000, 800, 1000) < 1e-6


def test_code_neighbours_put_each_code_first():
    g = code_neighbours(torch.randn(32, 8, generator=make_generator(0)), 5)
    assert g.shape == (32, 5) and torch.equal(g[:, 0], torch.arange(32))


def test_token_probs_matches_the_plain_sampler():
    logits = torch.randn(3, 10)
    assert torch.allclose(token_probs(logits, 0.5), (logits / 0.5).softmax(-1))
    assert torch.equal(token_probs(logits, 0).argmax(-1), logits.argmax(-1))


@pytest.mark.parametrize("cfg", [1.0, 2.0])
def test_the_fixed_shape_step_reproduces_greedy_decoding(model, cfg):
    dec = StaticDecoder(model, len(LABELS), 49, cfg_scale=cfg, temperature=0)
    ref = generate(model, 49, LABELS, cfg_scale=cfg, temperature=0)
    assert torch.equal(dec.sample(LABELS), ref) and torch.equal(dec.sample(LABELS), ref)   # reusable


def test_growing_cache_crops():
    c = GrowingKVCache(2)
    k = torch.randn(2, 4, 5, 8)
    c.update(0, k, k); c.length = 5
    c.crop(3)
    assert c.k[0].shape[2] == 3 and c.length == 3
    with pytest.raises(ValueError, match="length"): c.crop(4)


def test_bad_input_is_refused(model):
    for w in (0, -2, 1.5):
        with pytest.raises(ValueError, match="window"): speculative_jacobi(model, 49, LABELS, window=w)
    with pytest.raises(ValueError, match="n_tokens"): speculative_jacobi(model, 60, LABELS)       # cache/positions too short
    with pytest.raises(ValueError, match="n_tokens"): StaticDecoder(model, 2, 50)
    with pytest.raises(ValueError, match="cache"): model.new_cache(2, 10).check_room(2, 11)
    with pytest.raises(ValueError, match="cache"): generate(model, 5, LABELS, cache="paged")
    with pytest.raises(ValueError, match="groups"): speculative_jacobi(model, 49, LABELS, groups=torch.zeros(3, 2, dtype=torch.long))
    for gap, groups in ((0.1, None), (0.0, code_neighbours(torch.randn(16, 4), 2)), (-0.1, code_neighbours(torch.randn(16, 4), 2))):
        with pytest.raises(ValueError, match="group_gap"): speculative_jacobi(model, 49, LABELS, groups=groups, group_gap=gap)
    for rank, groups in ((3, None), (-1, code_neighbours(torch.randn(16, 4), 2)), (1.5, code_neighbours(torch.randn(16, 4), 2))):
        with pytest.raises(ValueError, match="group_rank"): speculative_jacobi(model, 49, LABELS, groups=groups, group_rank=rank)
    with pytest.raises(ValueError, match="mode"): StaticDecoder(model, 2, 10, mode="turbo")
    with pytest.raises(ValueError, match="labels"): StaticDecoder(model, 2, 10).sample(torch.arange(3))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"): StaticDecoder(model, 2, 10, mode="cuda-graph")
    with pytest.raises(ValueError, match="k"): code_neighbours(torch.randn(4, 2), 5)
