import pytest
import torch
from argen_lit.core import make_generator
from argen_lit.next_scale import (MultiScaleConfig, MultiScaleTokenizer, NextScalePrior, check_scales,
                                  sample_next_scale, scale_positions)
from argen_lit.transformer import TransformerConfig


@pytest.fixture(scope="module")
def parts(ms_smoke):
    tok, x, y = ms_smoke
    prior = NextScalePrior(TransformerConfig.smoke(vocab_size=tok.n_codes, max_seq_len=104, rope="2d", grid=(7, 7)),
                           tok.quantizer).eval()
    return tok, prior, x, y


def test_decoding_the_ids_reproduces_the_quantizer_reconstruction(parts):
    tok, _, x, _ = parts
    rec, q = tok(x)
    assert q.indices.shape == (6, 104)
    assert torch.allclose(tok.quantizer.decode_ids(q.indices), q.z_q, atol=1e-5)
    assert torch.equal(tok.decode(q.indices), (rec * 255).round().to(torch.uint8))


def test_tokens_of_a_scale_do_not_see_later_scales(parts):
    tok, prior, x, y = parts
    ids = tok.encode(x)
    base = prior(ids[:, :-1], y)
    starts = [0, 1, 5, 14, 30, 55, 104]
    for k in range(1, 6):                                     # perturb scale k and everything after it
        moved_ids = ids.clone(); moved_ids[:, starts[k]:] = (moved_ids[:, starts[k]:] + 7) % tok.n_codes
        moved = (prior(moved_ids[:, :-1], y) - base).abs().amax(-1).amax(0)
        assert (moved[:starts[k + 1]] < 1e-5).all()          # scales <= k are predicted without seeing scale k
        if k < 5: assert (moved[starts[k + 1]:] > 1e-6).any()   # ... and the finer scales do


def test_cached_sampling_matches_teacher_forcing_greedy(parts):
    _, prior, _, y = parts
    ids = sample_next_scale(prior, y, temperature=0)
    logits = prior(ids[:, :-1], y)
    assert torch.equal(logits.argmax(-1), ids)                # each scale is the argmax given the coarser ones


def test_same_seed_same_samples_and_given_scales_are_kept(parts):
    tok, prior, x, y = parts
    a = sample_next_scale(prior, y, cfg_scale=2.0, generator=make_generator(3))
    b = sample_next_scale(prior, y, cfg_scale=2.0, generator=make_generator(3))
    c = sample_next_scale(prior, y, cfg_scale=2.0, generator=make_generator(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    given = tok.encode(x)[:, :14]
    d = sample_next_scale(prior, y, given=given, generator=make_generator(3))
    assert torch.equal(d[:, :14], given) and d.shape == (6, 104)


def test_positions_and_bad_input(parts):
    tok, prior, x, y = parts
    pos = scale_positions((1, 2, 7), 7)
    assert pos.shape == (1 + 1 + 4 + 49, 2) and pos[1].tolist() == [3.0, 3.0] and pos[-1].tolist() == [6.0, 6.0]
    for bad in [(1, 2, 5), (1, 3, 2, 7), (2, 2, 7), (), (0, 7)]:
        with pytest.raises(ValueError, match="scales"):
            check_scales(bad, 7)
    with pytest.raises(ValueError, match="scales"):
        MultiScaleTokenizer(MultiScaleConfig.smoke(scales=(1, 2, 4)))
    with pytest.raises(ValueError, match="given"):
        sample_next_scale(prior, y, given=tok.encode(x)[:, :10])   # 10 is not a scale boundary
    with pytest.raises(ValueError, match="cfg_scale"):
        sample_next_scale(prior, y, cfg_scale=-1.0)
    with pytest.raises(ValueError, match="labels"):
        sample_next_scale(prior, torch.tensor([12]))
    with pytest.raises(ValueError, match="ids"):
        tok.decode(torch.zeros(2, 50, dtype=torch.long))
    with pytest.raises(ValueError, match="config"):
        NextScalePrior(TransformerConfig.smoke(vocab_size=7, max_seq_len=104), tok.quantizer)
