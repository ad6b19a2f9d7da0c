import pytest
import torch
from argen_lit.core import make_generator
from argen_lit.next_scale import NextScalePrior, scale_positions
from argen_lit.recipes import get_budget, load_data
from argen_lit.scale_family import (MarkovScalePrior, StableStarPrior, StarPrior, aligned_positions, attention_cost,
                                    check_steps_per_scale, fit_markov, fit_stable_star, fit_star, markov_loss, markov_mask,
                                    sample_markov, sample_stable, stable_blocks, train_markov)
from argen_lit.transformer import TransformerConfig

STARTS = [0, 1, 5, 14, 30, 55, 104]


@pytest.fixture(scope="module")
def parts(ms_smoke):
    tok, x, y = ms_smoke
    cfg = TransformerConfig.smoke(vocab_size=tok.n_codes, max_seq_len=105, rope="2d", grid=(7, 7))
    torch.manual_seed(1)
    markov = MarkovScalePrior(cfg, tok.quantizer).eval()
    return tok, markov, x, y


def test_aligned_positions_put_each_query_at_its_own_token_and_var_reads_one_slot_late():
    scales = (1, 2, 3, 4, 5, 7)
    table, own = scale_positions(scales, 7), aligned_positions(scales, 7)
    assert own.shape == (104, 2)
    assert torch.equal(own[0], torch.tensor([3.0, 3.0]))           # the class token predicts the 1x1 map: its centre
    assert torch.equal(own[1], torch.tensor([1.25, 1.25]))         # token 1: the top-left cell of the 2x2 map
    assert not torch.equal(table[:104], own)                       # VAR's table (class token first) reads one slot late


def test_star_prior_differs_from_var_only_in_its_positions(parts):
    tok, _, x, y = parts
    cfg = TransformerConfig.smoke(vocab_size=tok.n_codes, max_seq_len=104, rope="2d", grid=(7, 7))
    torch.manual_seed(0); var = NextScalePrior(cfg, tok.quantizer).eval()
    star = StarPrior(cfg, tok.quantizer).eval()
    star.load_state_dict(var.state_dict())                         # same weights: the positions are not saved
    ids = tok.encode(x)
    assert not torch.allclose(star(ids[:, :-1], y), var(ids[:, :-1], y))
    base = star(ids[:, :-1], y)
    for k in range(1, 6):                                          # still block-causal
        moved_ids = ids.clone(); moved_ids[:, STARTS[k]:] = (moved_ids[:, STARTS[k]:] + 7) % tok.n_codes
        moved = (star(moved_ids[:, :-1], y) - base).abs().amax(-1).amax(0)
        assert (moved[:STARTS[k + 1]] < 1e-5).all()


def test_markov_mask_lets_a_block_see_itself_and_the_class_token_only():
    m = markov_mask([1, 4])
    want = torch.tensor([[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0]] + [[1, 0, 1, 1, 1, 1]] * 4, dtype=torch.bool)
    assert torch.equal(m, want)


def test_a_markov_block_depends_on_its_own_inputs_and_the_earlier_scales_only(parts):
    tok, markov, x, y = parts
    ids = tok.encode(x)
    base = markov(ids, y)
    assert base.shape == (6, 104, tok.n_codes)
    for k in range(6):
        known = torch.zeros_like(ids, dtype=torch.bool); known[:, STARTS[k]:STARTS[k + 1]] = True
        moved = (markov(ids, y, known) - base).abs().amax(-1).amax(0)
        assert (moved[STARTS[k]:STARTS[k + 1]] > 1e-6).any()               # its own known tokens count
        assert (torch.cat([moved[:STARTS[k]], moved[STARTS[k + 1]:]]) < 1e-5).all()  # and move no other block
    for k in range(5):                                             # the ids of scale k reach the later scales only
        moved_ids = ids.clone(); moved_ids[:, STARTS[k]:STARTS[k + 1]] = (moved_ids[:, STARTS[k]:STARTS[k + 1]] + 7) % tok.n_codes
        moved = (markov(moved_ids, y) - base).abs().amax(-1).amax(0)
        assert (moved[:STARTS[k + 1]] < 1e-5).all() and (moved[STARTS[k + 1]:] > 1e-6).any()


def test_one_block_alone_gives_the_logits_of_all_blocks_at_once(parts):
    tok, markov, x, y = parts
    ids = tok.encode(x)
    known = torch.rand(ids.shape, generator=make_generator(3)) < 0.4
    whole = markov(ids, y, known)
    maps, f_hat = tok.quantizer.split(ids), torch.zeros(6, tok.quantizer.dim, 7, 7)
    for k, n in enumerate(tok.quantizer.lengths):
        a, b = STARTS[k], STARTS[k + 1]
        pos = torch.cat([markov.positions[:1], markov.positions[1 + a:1 + b]])
        alone = markov.transformer(embeds=markov.block_inputs(f_hat, k, ids[:, a:b], known[:, a:b]), labels=y,
                                   mask=markov_mask([n]), positions=pos)[:, 1:]
        assert torch.allclose(alone, whole[:, a:b], atol=1e-5)
        f_hat = f_hat + tok.quantizer.embed_scale(k, maps[k])


def test_greedy_markov_sampling_equals_the_teacher_forced_argmax(parts):
    _, markov, _, y = parts
    ids = sample_markov(markov, y, 1, temperature=0)
    assert ids.shape == (6, 104)
    assert torch.equal(markov(ids, y).argmax(-1), ids)


def test_markov_sampling_is_seeded_and_takes_steps_per_scale(parts):
    _, markov, _, y = parts
    a = sample_markov(markov, y, (1, 2, 3, 4, 5, 7), cfg_scale=2.0, top_p=0.9, generator=make_generator(0))
    b = sample_markov(markov, y, (1, 2, 3, 4, 5, 7), cfg_scale=2.0, top_p=0.9, generator=make_generator(0))
    c = sample_markov(markov, y, (1, 2, 3, 4, 5, 7), cfg_scale=2.0, top_p=0.9, generator=make_generator(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert ((a >= 0) & (a < markov.quantizer.n_codes)).all()
    one_by_one = sample_markov(markov, y[:2], markov.quantizer.lengths, generator=make_generator(0))  # a token per step
    assert one_by_one.shape == (2, 104)


def test_attention_cost_counts_pairs_by_hand():
    assert attention_cost((1, 4, 9)) == {"pairs": 1 + 4 * 5 + 9 * 14, "positions": 14}
    for bad in [(), (4, 9), (1, 0), "1,4", (1, 2.5)]:
        with pytest.raises(ValueError, match="lengths"): attention_cost(bad)
    assert attention_cost((1, 4, 9), 1) == {"pairs": 4 + 25 + 100, "positions": 10}
    assert attention_cost((1, 4, 9), (1, 2, 3))["pairs"] == 4 + 2 * 25 + 3 * 100


def test_markov_training_lowers_its_loss(parts):
    tok, _, x, y = parts
    torch.manual_seed(0)
    cfg = TransformerConfig.smoke(vocab_size=tok.n_codes, max_seq_len=105, rope="2d", grid=(7, 7))
    m = MarkovScalePrior(cfg, tok.quantizer)
    ids = tok.encode(x).repeat(4, 1); labels = y.repeat(4)
    bits = train_markov(m, ids, labels, steps=40, batch_size=8, lr=3e-3)
    assert len(bits) == 40 and sum(bits[-5:]) / 5 < sum(bits[:5]) / 5
    assert torch.isfinite(markov_loss(m.eval(), ids, labels, make_generator(0)))


@pytest.mark.parametrize("steps, match", [((1, 2), "steps_per_scale"), (0, "steps_per_scale"), ((1, 1, 1, 1, 1, 50), "steps_per_scale"),
                                          ("one", "steps_per_scale"), (True, "steps_per_scale"), ((1, 1, 1, 1, 1, 2.5), "steps_per_scale")])
def test_bad_steps_per_scale_are_refused_by_name(parts, steps, match):
    _, markov, _, y = parts
    with pytest.raises(ValueError, match=match): sample_markov(markov, y, steps)
    with pytest.raises(ValueError, match=match): check_steps_per_scale(steps, markov.quantizer.lengths)


def test_bad_markov_inputs_are_refused_by_name(parts):
    tok, markov, x, y = parts
    ids = tok.encode(x)
    with pytest.raises(ValueError, match="ids"): markov(ids[:, :-1], y)
    with pytest.raises(ValueError, match="ids"): markov(ids + tok.n_codes, y)
    with pytest.raises(ValueError, match="known"): markov(ids, y, torch.zeros_like(ids))
    with pytest.raises(ValueError, match="known"): markov(ids, y, torch.zeros(6, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="config"):
        MarkovScalePrior(TransformerConfig.smoke(vocab_size=tok.n_codes, max_seq_len=105, abs_pos=True), tok.quantizer)
    with pytest.raises(ValueError, match="config"):
        MarkovScalePrior(TransformerConfig.smoke(vocab_size=tok.n_codes, max_seq_len=104), tok.quantizer)


def test_the_entries_train_save_and_load_back(tmp_path):
    b = get_budget("smoke")
    data = load_data(b)
    labels = torch.arange(4)
    for fit in (fit_star, fit_markov, fit_stable_star):
        first = fit(b, data, tmp_path, "cpu")
        again = fit(b, data, tmp_path, "cpu")                      # loaded from tmp_path, not trained again
        a, c = first.sample(labels, make_generator(0)), again.sample(labels, make_generator(0))
        assert a.shape == (4, 1, 28, 28) and a.dtype == torch.uint8 and torch.equal(a, c)
    assert (tmp_path / "star_prior" / "config.json").exists() and (tmp_path / "markov_prior" / "model.safetensors").exists()
    assert (tmp_path / "stable_star_prior_c1" / "model.safetensors").exists()


def stable_prior(tok, causal_scales=1, seed=2):
    torch.manual_seed(seed)
    cfg = TransformerConfig.smoke(vocab_size=tok.n_codes, max_seq_len=104, rope="2d", grid=(7, 7), abs_pos=True)
    return StableStarPrior(cfg, tok.quantizer, causal_scales).eval()


def test_stable_blocks_split_the_last_scales_into_rows():
    assert stable_blocks((1, 2, 3), 1) == [1, 4, 3, 3, 3]
    assert stable_blocks((1, 2, 3), 2) == [1, 2, 2, 3, 3, 3]
    assert sum(stable_blocks((1, 2, 3, 4, 5, 7), 3)) == 104
    for bad in (0, 3, 1.0, "1", True):
        with pytest.raises(ValueError, match="causal_scales"): stable_blocks((1, 2, 3), bad)


@pytest.mark.parametrize("causal_scales", [1, 2])
def test_a_stable_row_reads_the_rows_above_and_the_earlier_scales_only(parts, causal_scales):
    tok, _, x, y = parts
    prior, ids = stable_prior(tok, causal_scales), tok.encode(x)
    base = prior(ids, y)
    assert base.shape == (6, 104, tok.n_codes)
    for k in range(6 - causal_scales, 6):                          # every causal scale: rows in order
        s, a = tok.quantizer.scales[k], STARTS[k]
        for r in range(s - 1):
            for c in range(s):
                j = a + s * r + c
                poked = ids.clone(); poked[:, j] = (poked[:, j] + 5) % tok.n_codes
                moved = (prior(poked, y) - base).abs().amax(-1).amax(0)
                assert (moved[:a + s * (r + 1)] < 1e-5).all(), (k, r, c)  # nothing before it or in its row moves
                assert moved[j + s] > 1e-6, (k, r, c)                     # the token directly below reads it
    k = 5 - causal_scales                                          # a parallel scale still reaches the later ones only
    poked = ids.clone(); poked[:, STARTS[k]] = (poked[:, STARTS[k]] + 5) % tok.n_codes
    moved = (prior(poked, y) - base).abs().amax(-1).amax(0)
    assert (moved[:STARTS[k + 1]] < 1e-5).all() and (moved[STARTS[k + 1]:] > 1e-6).any()
    assert torch.allclose(prior(ids[:, :-1], y), base, atol=1e-6)  # the last token is read by no one


@pytest.mark.parametrize("causal_scales", [1, 3])
def test_greedy_stable_sampling_equals_the_teacher_forced_argmax(parts, causal_scales):
    tok, _, _, y = parts
    prior = stable_prior(tok, causal_scales)
    ids = sample_stable(prior, y, top_k=1)
    assert ids.shape == (6, 104)
    assert torch.equal(prior(ids, y).argmax(-1), ids)


def test_guided_stable_sampling_equals_the_guided_teacher_forced_argmax(parts):
    from argen_lit.next_scale import guidance_ramp
    from argen_lit.transformer import cfg_logits
    tok, _, _, y = parts
    prior = stable_prior(tok, 2)
    ids = sample_stable(prior, y, cfg_scale=3.0, top_k=1)
    cond, uncond = prior(ids, y), prior(ids, torch.full_like(y, prior.config.null_class))
    for k in range(6):                                             # the guidance ramps over the scales
        a, b = STARTS[k], STARTS[k + 1]
        want = cfg_logits(cond[:, a:b], uncond[:, a:b], guidance_ramp(3.0, k, 6)).argmax(-1)
        assert torch.equal(want, ids[:, a:b]), k


def test_stable_sampling_is_seeded_and_counts_its_passes(parts):
    from argen_lit.eval import count_forward_passes
    tok, _, _, y = parts
    prior = stable_prior(tok)
    kw = dict(cfg_scale=2.0, temperature=0.9, top_p=0.9)
    with count_forward_passes(prior.transformer) as calls:
        a = sample_stable(prior, y, generator=make_generator(0), **kw)
    b, c = (sample_stable(prior, y, generator=make_generator(s), **kw) for s in (0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert ((a >= 0) & (a < tok.n_codes)).all() and calls["n"] == 5 + 7


def test_bad_stable_inputs_are_refused_by_name(parts):
    tok, _, x, y = parts
    prior, ids = stable_prior(tok), tok.encode(x)
    with pytest.raises(ValueError, match="ids"): prior(ids[:, :-2], y)
    with pytest.raises(ValueError, match="ids"): prior(ids + tok.n_codes, y)
    with pytest.raises(ValueError, match="prior"): sample_stable(StarPrior(prior.config, tok.quantizer), y)
    from argen_lit.next_scale import sample_next_scale
    with pytest.raises(ValueError, match="prior"): sample_next_scale(prior, y)   # VAR's sampler knows nothing of rows
    for bad in (0, 6, "1"):
        with pytest.raises(ValueError, match="causal_scales"): stable_prior(tok, bad)
