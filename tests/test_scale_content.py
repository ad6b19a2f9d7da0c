import pytest
import torch
from einops import rearrange
from argen_lit.core import InputError, make_generator
from argen_lit.flow_heads import guided_flow
from argen_lit.next_scale import MultiScaleConfig, NextScalePrior, load_multiscale_tokenizer, sample_next_scale
from argen_lit.recipes import get_budget, load_data, prior_config
from argen_lit.scale_content import (FlowARConfig, FlowARPrior, FrequencyConfig, FrequencyQuantizer, FrequencyTokenizer, dct_matrix, dct_resize,
                                     fit_flowar, fit_nfig, flowar_tokens, sample_flowar)
from argen_lit.vq import train_tokenizer

SMOKE = get_budget("smoke")
STARTS = [0, 1, 5, 21, 70]


def small_flowar(seed=0):
    torch.manual_seed(seed)
    prior = FlowARPrior(FlowARConfig(backbone=prior_config(SMOKE, 0, 70).to_dict(), token_dim=4, head_width=16)).eval()
    for h in prior.heads: torch.nn.init.normal_(h.out.weight, std=0.1)   # trained heads are not zero
    return prior


@pytest.mark.parametrize("n", [1, 2, 7, 28])
def test_the_dct_matrix_is_orthonormal_with_a_constant_first_row(n):
    a = dct_matrix(n)
    assert torch.allclose(a @ a.T, torch.eye(n), atol=1e-5)
    assert torch.allclose(a[0], torch.full((n,), n ** -0.5))


def test_dct_resize_keeps_constants_and_up_then_down_is_the_identity():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 3, 4, 4, generator=g)
    assert torch.allclose(dct_resize(torch.full((1, 7, 7), -1.5), 2), torch.full((1, 2, 2), -1.5), atol=1e-6)
    assert torch.allclose(dct_resize(torch.full((1, 2, 2), 0.7), 7), torch.full((1, 7, 7), 0.7), atol=1e-6)
    assert torch.allclose(dct_resize(dct_resize(z, 7), 4), z, atol=1e-5)
    assert torch.equal(dct_resize(z, 4), z)


def test_an_upsampled_band_has_no_higher_frequency():
    up = dct_resize(torch.randn(5, 3, 3), 7)
    c = dct_matrix(7) @ up @ dct_matrix(7).T
    assert c[:, 3:, :].abs().max() < 1e-5 and c[:, :, 3:].abs().max() < 1e-5


def test_dct_resize_refuses_bad_input():
    with pytest.raises(InputError, match="x:"): dct_resize(torch.zeros(3, 4, 5), 2)
    with pytest.raises(InputError, match="x:"): dct_resize(torch.tensor(1.0), 2)
    with pytest.raises(InputError, match="x:"): dct_resize(torch.zeros(4, 4, dtype=torch.long), 2)
    with pytest.raises(InputError, match="s:"): dct_resize(torch.zeros(4, 4), 0)
    with pytest.raises(InputError, match="n:"): dct_matrix(0)


def test_the_frequency_tokenizer_codes_bands_and_decodes_every_prefix():
    x = load_data(SMOKE).xte[:16]
    torch.manual_seed(0)
    tok = FrequencyTokenizer(FrequencyConfig.smoke())
    assert isinstance(tok.quantizer, FrequencyQuantizer)
    train_tokenizer(tok, x, steps=3, batch_size=8); tok.eval()
    ids = tok.encode(x)
    assert ids.shape == (16, 104)
    for n in range(1, 7): assert tok.decode(ids, n_scales=n).shape == (16, 1, 28, 28)
    q = tok.quantizer                                                    # scale 2 (3x3) adds nothing above index 3
    for k, s in enumerate(q.scales[:-1]):                                # what scale k adds holds no frequency >= s_k
        c = dct_matrix(7) @ q.embed_scale(k, q.split(ids)[k]) @ dct_matrix(7).T
        assert c[..., s:, :].abs().max() < 1e-4 and c[..., :, s:].abs().max() < 1e-4, k
    with pytest.raises(InputError, match="config"): FrequencyTokenizer(MultiScaleConfig.smoke())
    prior = NextScalePrior(prior_config(SMOKE, tok.n_codes, 104, abs_pos=True), tok.quantizer)
    assert isinstance(prior.quantizer, FrequencyQuantizer)               # the prior's inputs are band-limited too
    assert sample_next_scale(prior, torch.arange(3), generator=make_generator(0)).shape == (3, 104)


def test_flowar_conditions_are_block_causal():
    prior, y = small_flowar(), torch.tensor([2, 5, 9])
    with torch.no_grad():
        maps = prior.pyramid(torch.randn(3, 49, 4))
        base = prior.conditions(maps, y)
        for k in range(3):
            moved_maps = [m.clone() for m in maps]; moved_maps[k] -= 0.5
            moved = (prior.conditions(moved_maps, y) - base).abs().amax((0, 2)) > 1e-5
            assert not moved[:STARTS[k + 1]].any() and moved[STARTS[k + 1]:STARTS[k + 2]].all(), k


def test_flowar_pyramid_is_the_latent_downsampled():
    prior = small_flowar()
    tokens = torch.randn(2, 49, 4)
    maps = prior.pyramid(tokens)
    assert [tuple(m.shape[-2:]) for m in maps] == [(1, 1), (2, 2), (4, 4), (7, 7)]
    assert torch.equal(flowar_tokens(maps), tokens)
    assert torch.allclose(maps[0][:, :, 0, 0], tokens.mean(1), atol=1e-6)


def test_cached_flowar_sampling_equals_the_teacher_forced_redraw():
    prior, y = small_flowar(), torch.tensor([0, 3, 6])
    with torch.no_grad():
        drawn = sample_flowar(prior, y, steps=3, temperature=0.0)
        z = prior.conditions(drawn, y)
        for k, (m, a, b) in enumerate(zip(drawn, STARTS, STARTS[1:])):
            again = guided_flow(prior.heads[k], z[:, a:b].reshape(-1, z.shape[-1]), 3, 1.0, 0.0)
            assert torch.allclose(rearrange(again, "(b h w) c -> b c h w", b=3, h=prior.scales[k]), m, atol=1e-5)


def test_flowar_sampling_is_seeded_guided_and_stops_early():
    prior, y = small_flowar(), torch.tensor([1, 2])
    a = sample_flowar(prior, y, steps=2, cfg_scale=3.0, temperature=0.9, generator=make_generator(3))
    b = sample_flowar(prior, y, steps=2, cfg_scale=3.0, temperature=0.9, generator=make_generator(3))
    c = sample_flowar(prior, y, steps=2, cfg_scale=3.0, temperature=0.9, generator=make_generator(4))
    assert all(torch.equal(u, v) for u, v in zip(a, b)) and not torch.equal(a[-1], c[-1])
    assert [tuple(m.shape) for m in a] == [(2, 4, 1, 1), (2, 4, 2, 2), (2, 4, 4, 4), (2, 4, 7, 7)]
    assert len(sample_flowar(prior, y, steps=2, n_scales=2)) == 2


def test_flowar_loss_trains_every_head():
    prior = small_flowar().train()
    loss = prior.loss(torch.randn(4, 49, 4), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(h.out.weight.grad is not None and h.out.weight.grad.abs().sum() > 0 for h in prior.heads)


def test_flowar_refuses_bad_input():
    prior = small_flowar()
    with pytest.raises(InputError, match="tokens"): prior.pyramid(torch.randn(2, 50, 4))
    with pytest.raises(InputError, match="tokens"): prior.pyramid(torch.zeros(2, 49, 4, dtype=torch.long))
    with pytest.raises(InputError, match="tokens"): prior.pyramid(torch.full((2, 49, 4), float("nan")))
    with pytest.raises(InputError, match="n_scales"): sample_flowar(prior, torch.tensor([0]), n_scales=5)
    with pytest.raises(InputError, match="steps"): sample_flowar(prior, torch.tensor([0]), steps=0)
    with pytest.raises(InputError, match="scales"): FlowARConfig(backbone=prior_config(SMOKE, 0, 70).to_dict(), scales=(1, 4, 2, 7))
    with pytest.raises(InputError, match="max_seq_len"): FlowARConfig(backbone=prior_config(SMOKE, 0, 20).to_dict())
    with pytest.raises(InputError, match="vocab_size"): FlowARConfig(backbone=prior_config(SMOKE, 512, 70).to_dict())


def test_the_entries_train_save_and_load_back(tmp_path):
    data = load_data(SMOKE)
    labels = torch.arange(4)
    for fit, folder in ((fit_flowar, "flowar_prior"), (fit_nfig, "nfig_prior")):
        first, again = fit(SMOKE, data, tmp_path, "cpu"), fit(SMOKE, data, tmp_path, "cpu")
        a, b = first.sample(labels, make_generator(0)), again.sample(labels, make_generator(0))
        assert a.shape == (4, 1, 28, 28) and a.dtype == torch.uint8 and torch.equal(a, b)
        assert (tmp_path / folder / "model.safetensors").exists()
    assert (tmp_path / "freq_tokenizer" / "config.json").exists()
    with pytest.raises(InputError, match="config_cls"): load_multiscale_tokenizer(tmp_path / "freq_tokenizer")
