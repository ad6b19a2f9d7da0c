import pytest
import torch
from argen_lit.core import make_generator
from argen_lit.data import load_mnist5k
from argen_lit.next_scale import MultiScaleConfig, MultiScaleTokenizer, NextScalePrior, sample_next_scale
from argen_lit.recipes import get_budget, load_data
from argen_lit.scale_flex import (DEGRADATIONS, FlexPrior, Lifter, bicubic, check_schedule, degrade, fit_flex, flex_loss,
                                  flex_maps, latents, mean_psnr, random_schedule, sample_flex, super_resolve, train_flex,
                                  train_lifter, upsampled_codes)
from argen_lit.transformer import TransformerConfig
from argen_lit.vq import Tokenizer, TokenizerConfig, train_tokenizer


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    x, y = load_mnist5k("test")
    tok = Tokenizer(TokenizerConfig.smoke(quantizer="ema"))
    train_tokenizer(tok, x[:256], steps=5)
    tok.eval()
    torch.manual_seed(1)
    prior = FlexPrior(TransformerConfig.smoke(vocab_size=tok.n_codes, max_seq_len=140, rope="2d", grid=(7, 7)), tok.quantizer).eval()
    return tok, prior, x[:6], y[:6]


def test_flex_maps_are_the_latent_at_each_size_and_end_on_the_tokenizers_code(parts):
    tok, _, x, _ = parts
    f = latents(tok, x)
    maps = flex_maps(tok.quantizer, f, (1, 3, 7))
    assert [tuple(m.shape) for m in maps] == [(6, 1, 1), (6, 3, 3), (6, 7, 7)]
    assert torch.equal(maps[-1], tok.encode(x))
    one = tok.quantizer.ids_of(f.mean((2, 3)))                      # the 1x1 map: the mean latent's nearest code
    assert torch.equal(maps[0].flatten(), one)
    assert upsampled_codes(tok.quantizer, maps[1], 7).shape == (6, f.shape[1], 7, 7)


def test_flex_prior_is_block_causal_under_any_schedule(parts):
    tok, prior, x, y = parts
    f = latents(tok, x)
    for sched in [(1, 2, 3, 4, 5, 7), (1, 3, 6, 7), (1, 7)]:
        maps = flex_maps(tok.quantizer, f, sched)
        starts = [sum(s * s for s in sched[:k]) for k in range(len(sched) + 1)]
        base = prior(maps, y)
        assert base.shape == (6, starts[-1], tok.n_codes)
        for k in range(1, len(sched)):
            moved = [m if j < k else (m + 5) % tok.n_codes for j, m in enumerate(maps)]
            d = (prior(moved, y) - base).abs().amax(-1).amax(0)
            assert (d[:starts[k + 1]] < 1e-5).all()
            if k < len(sched) - 1: assert (d[starts[k + 1]:] > 1e-6).any()


def test_greedy_flex_sampling_equals_the_teacher_forced_argmax_for_unseen_schedules(parts):
    _, prior, _, y = parts
    for sched in [(1, 2, 3, 4, 5, 6, 7), (1, 7)]:
        maps = sample_flex(prior, y, sched, temperature=0)
        assert [m.shape[-1] for m in maps] == list(sched)
        assert torch.equal(prior(maps, y).argmax(-1), torch.cat([m.flatten(1) for m in maps], 1))


def test_flex_sampling_is_seeded_and_keeps_the_given_maps(parts):
    tok, prior, x, y = parts
    a = sample_flex(prior, y, cfg_scale=2.0, top_p=0.9, generator=make_generator(0))
    b = sample_flex(prior, y, cfg_scale=2.0, top_p=0.9, generator=make_generator(0))
    c = sample_flex(prior, y, cfg_scale=2.0, top_p=0.9, generator=make_generator(1))
    assert all(torch.equal(p, q) for p, q in zip(a, b)) and not all(torch.equal(p, q) for p, q in zip(a, c))
    given = flex_maps(tok.quantizer, latents(tok, x), (1, 2, 3))
    refined = sample_flex(prior, y, given=given, generator=make_generator(0))
    assert all(torch.equal(r, g) for r, g in zip(refined, given))


def test_random_schedules_skip_the_held_out_size_and_training_lowers_the_loss(parts):
    tok, _, x, y = parts
    gen = torch.Generator().manual_seed(0)
    scheds = [random_schedule(7, (6,), gen) for _ in range(200)]
    assert all(s[0] == 1 and s[-1] == 7 and 6 not in s and list(s) == sorted(set(s)) for s in scheds)
    assert len(set(scheds)) > 10
    torch.manual_seed(0)
    prior = FlexPrior(TransformerConfig.smoke(vocab_size=tok.n_codes, max_seq_len=140, rope="2d", grid=(7, 7)), tok.quantizer)
    f = latents(tok, x).repeat(4, 1, 1, 1)
    bits = train_flex(prior, f, y.repeat(4), steps=40, batch_size=8, lr=3e-3)
    assert len(bits) == 40 and sum(bits[-5:]) / 5 < sum(bits[:5]) / 5
    assert torch.isfinite(flex_loss(prior.eval(), f[:4], y[:4], (1, 4, 7)))


@pytest.mark.parametrize("scales", [(2, 7), (1, 3, 3, 7), (1, 5), (), "1,7", (1, 8)])
def test_bad_schedules_are_refused_by_name(parts, scales):
    _, prior, _, y = parts
    with pytest.raises(ValueError, match="scales"): sample_flex(prior, y, scales)
    with pytest.raises(ValueError, match="scales"): check_schedule(scales, 7)


def test_bad_flex_inputs_are_refused_by_name(parts):
    tok, prior, x, y = parts
    maps = flex_maps(tok.quantizer, latents(tok, x), (1, 2, 7))
    with pytest.raises(ValueError, match="maps"): prior(maps[:1], y, (1, 2, 7))
    with pytest.raises(ValueError, match="given"): sample_flex(prior, y, (1, 2, 7), given=maps)
    with pytest.raises(ValueError, match="given"): sample_flex(prior, y, (1, 3, 7), given=maps[:2])
    with pytest.raises(ValueError, match="given"): sample_flex(prior, y, (1, 2, 7), given=[maps[0] + tok.n_codes])
    with pytest.raises(ValueError, match="given"): sample_flex(prior, y, (1, 2, 7), given=[maps[0].float()])
    f = latents(tok, x)
    with pytest.raises(ValueError, match="f"): train_flex(prior, f[:, :, :5, :5], y, steps=1)
    with pytest.raises(ValueError, match="f"): train_flex(prior, f[:, :3], y, steps=1)
    with pytest.raises(ValueError, match="skip"): train_flex(prior, f, y, steps=1, skip=6)
    with pytest.raises(ValueError, match="skip"): train_flex(prior, f, y, steps=1, skip=(7,))
    with pytest.raises(ValueError, match="full_share"): train_flex(prior, f, y, steps=1, full_share=1.5)
    with pytest.raises(ValueError, match="scales"): train_flex(prior, f, y, steps=1, full=(1, 6))
    with pytest.raises(ValueError, match="config"):
        FlexPrior(TransformerConfig.smoke(vocab_size=tok.n_codes, max_seq_len=104), tok.quantizer)
    with pytest.raises(ValueError, match="config"):
        FlexPrior(TransformerConfig.smoke(vocab_size=tok.n_codes, max_seq_len=140, abs_pos=True), tok.quantizer)


def test_degrade_shapes_ranges_and_strengths():
    x, _ = load_mnist5k("test")
    lr = {k: degrade(x[:50], **d, generator=make_generator(0)) for k, d in DEGRADATIONS.items()}
    assert all(v.shape == (50, 1, 7, 7) and v.min() >= 0 and v.max() <= 1 for v in lr.values())
    psnr = [mean_psnr(bicubic(v), x[:50]) for v in lr.values()]
    assert psnr[0] > psnr[2]                                        # the strong degradation loses more
    assert torch.equal(degrade(x[:5], 1.0, 0.1, generator=make_generator(3)), degrade(x[:5], 1.0, 0.1, generator=make_generator(3)))
    assert mean_psnr(x[:5], x[:5]) > 100
    with pytest.raises(ValueError, match="blur"): degrade(x[:5], blur=-1)
    with pytest.raises(ValueError, match="noise"): degrade(x[:5], noise=-0.1)
    with pytest.raises(ValueError, match="factor"): degrade(x[:5], factor=3)
    with pytest.raises(ValueError, match="images"): degrade(x[:5].float(), blur=1)
    with pytest.raises(ValueError, match="blur"): degrade(x[:5], blur=10)
    with pytest.raises(ValueError, match="images"): mean_psnr(x[:5], x[:1])


def test_super_resolution_keeps_the_given_scales_and_the_lifter_learns():
    torch.manual_seed(0)
    x, _ = load_mnist5k("test")
    tok = MultiScaleTokenizer(MultiScaleConfig.smoke()).eval()
    prior = NextScalePrior(TransformerConfig.smoke(vocab_size=tok.n_codes, max_seq_len=104, rope="2d", grid=(7, 7)), tok.quantizer).eval()
    lifter = Lifter(tok.quantizer.dim, 7)
    losses = train_lifter(lifter, tok, x[:256], steps=30, batch_size=32)
    assert sum(losses[-5:]) < sum(losses[:5])
    lr = degrade(x[:4], 1.0, 0.05, generator=make_generator(0))
    codebook = tok.quantizer.codebook.embed.clone()
    tok.train()                                                     # super_resolve must not update the EMA codebook
    out = super_resolve(lifter, tok, prior, lr, 3, generator=make_generator(0))
    assert tok.training and torch.equal(tok.quantizer.codebook.embed, codebook)
    tok.eval()
    assert out.shape == (4, 1, 28, 28) and out.dtype == torch.uint8
    with torch.no_grad(): given = tok.quantizer(lifter.eval()(lr)).indices[:, :14]   # the first three scales: 1 + 4 + 9 ids
    null = torch.full((4,), prior.config.n_classes)
    assert torch.equal(out, tok.decode(sample_next_scale(prior, null, given=given, generator=make_generator(0))))
    assert torch.equal(out, super_resolve(lifter, tok, prior, lr, 3, generator=make_generator(0)))    # seeded
    full = super_resolve(lifter, tok, prior, lr, 6, generator=make_generator(5))   # every scale from the lifter: no draw
    assert torch.equal(full, tok.decode(tok.quantizer(lifter(lr)).indices))
    with pytest.raises(ValueError, match="given_scales"): super_resolve(lifter, tok, prior, lr, 0)
    with pytest.raises(ValueError, match="lr"): lifter(torch.rand(2, 3, 7, 7))
    with pytest.raises(ValueError, match="batch_size"): super_resolve(lifter, tok, prior, lr, 3, batch_size=0)


def test_the_flex_entry_trains_saves_and_loads_back(tmp_path):
    b = get_budget("smoke")
    data = load_data(b)
    first, again = fit_flex(b, data, tmp_path, "cpu"), fit_flex(b, data, tmp_path, "cpu")
    a, c = first.sample(torch.arange(4), make_generator(0)), again.sample(torch.arange(4), make_generator(0))
    assert a.shape == (4, 1, 28, 28) and torch.equal(a, c)
    assert (tmp_path / "flex_prior" / "model.safetensors").exists()
    fixed = fit_flex(b, data, tmp_path, "cpu", full_share=1.0)       # another training mix: its own folder
    assert (tmp_path / "flex_prior_share1" / "config.json").exists() and fixed.sample(torch.arange(2), make_generator(0)).shape == (2, 1, 28, 28)
