import json
import pytest
import torch
import torch.nn.functional as F
from argen_lit.core import InputError, load_config, make_generator, save_checkpoint
from argen_lit.next_scale import (MultiScaleConfig, MultiScaleTokenizer, guidance_ramp, ms_tokenizer, next_scale_prior,
                                  sample_next_scale, scales_name)
from argen_lit.recipes import get_budget, load_data, prior_config
from argen_lit.scale_speed import MixerState, MVarPrior, ScaleMixer, fit_mvar, mvar_cost, sample_mvar
from argen_lit.transformer import Transformer, TransformerConfig
from argen_lit.vq import Tokenizer, TokenizerConfig, conv_decoder, conv_encoder, raster_prior, vq_tokenizer

SMOKE = get_budget("smoke")


@pytest.fixture(scope="module")
def mvar():
    torch.manual_seed(0)
    q = MultiScaleTokenizer(MultiScaleConfig.smoke()).quantizer
    prior = MVarPrior(prior_config(SMOKE, q.n_codes, sum(q.lengths)), q).eval()
    for m in prior.mixers:                                              # trained mixers are not zero: make them matter
        torch.nn.init.normal_(m.proj.weight, std=0.1); torch.nn.init.normal_(m.qkv.weight, std=0.5)
    return prior


def test_downsample_2_gives_a_14x14_grid_and_4_keeps_the_old_layers():
    x = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    tok = Tokenizer(TokenizerConfig(quantizer="ema", channels=16, downsample=2))
    ids = tok.encode(x)
    assert ids.shape == (3, 14, 14) and tok.grid == (14, 14)
    assert tok.decode(ids).shape == (3, 1, 28, 28)
    assert conv_encoder(8, 4, 2)(torch.zeros(1, 1, 28, 28)).shape == (1, 4, 14, 14)
    assert conv_decoder(8, 4, 2)(torch.zeros(1, 4, 14, 14)).shape == (1, 1, 28, 28)
    old = Tokenizer(TokenizerConfig(quantizer="ema", channels=16)).state_dict()   # the shipped checkpoints' layers
    assert tuple(old["encoder.2.weight"].shape) == (16, 16, 4, 4)    # the first stride-2 conv
    assert tuple(old["decoder.4.weight"].shape) == (16, 16, 4, 4)    # the last transposed conv
    new = tok.state_dict()
    assert tuple(new["encoder.2.weight"].shape) == (16, 16, 3, 3) and tuple(new["decoder.4.weight"].shape) == (16, 16, 3, 3)
    assert [k for k in old] == [k for k in new]                      # the same names: only two kernels change
    ms = MultiScaleTokenizer(MultiScaleConfig.smoke(scales=(1, 2, 4, 7, 14), downsample=2))
    assert ms.encode(x).shape == (3, 1 + 4 + 16 + 49 + 196)


def test_a_config_saved_before_downsample_existed_loads_as_4(tmp_path):
    tok = Tokenizer(TokenizerConfig(quantizer="ema", channels=16))
    save_checkpoint(tok, tmp_path)
    record = json.loads((tmp_path / "config.json").read_text())
    record["config"].pop("downsample")                               # as the shipped checkpoints were written
    (tmp_path / "config.json").write_text(json.dumps(record))
    assert load_config(tmp_path, TokenizerConfig).downsample == 4
    ms = tmp_path / "ms"
    save_checkpoint(MultiScaleTokenizer(MultiScaleConfig.smoke()), ms)
    record = json.loads((ms / "config.json").read_text())
    record["config"].pop("downsample")
    (ms / "config.json").write_text(json.dumps(record))
    assert load_config(ms, MultiScaleConfig).downsample == 4


@pytest.mark.parametrize("bad", [3, 1, 8, True, "2"])
def test_a_bad_downsample_is_refused_by_name(bad):
    with pytest.raises(InputError, match="downsample"): TokenizerConfig(quantizer="ema", downsample=bad)
    with pytest.raises(InputError, match="downsample"): MultiScaleConfig(downsample=bad)


def test_the_scales_must_end_at_the_latent_of_the_downsample():
    with pytest.raises(InputError, match="scales"): MultiScaleTokenizer(MultiScaleConfig.smoke(scales=(1, 2, 3, 4, 5, 7), downsample=2))


def test_the_entries_train_14x14_models_into_their_own_folders(tmp_path):
    data = load_data(SMOKE)
    tok, _ = vq_tokenizer(SMOKE, data, tmp_path, "cpu", downsample=2)
    prior, _ = raster_prior(SMOKE, tok, data, tmp_path, "cpu")
    assert prior.config.grid == (14, 14) and prior.config.max_seq_len == 197
    ms, _ = ms_tokenizer(SMOKE, data, tmp_path, "cpu", scales=(1, 2, 4, 7, 14), downsample=2)
    var, _ = next_scale_prior(SMOKE, ms, data, tmp_path, "cpu")
    names = {p.name for p in tmp_path.iterdir()}
    assert {"vq_tokenizer_d2", "vq_prior_14x14", "ms_tokenizer_1-2-4-7-14", "next_scale_prior_1-2-4-7-14"} <= names
    ids = sample_next_scale(var, torch.arange(2), generator=make_generator(0))
    assert ms.decode(ids).shape == (2, 1, 28, 28)
    assert scales_name("ms_tokenizer", (1, 2, 3, 4, 5, 7)) == "ms_tokenizer"


def test_guidance_ramps_from_one_to_the_scale():
    assert [guidance_ramp(3.0, k, 5) for k in range(5)] == [1.0, 1.5, 2.0, 2.5, 3.0]
    assert guidance_ramp(3.0, 0, 1) == 1.0


def test_after_block_sees_every_layer_and_identity_changes_nothing():
    torch.manual_seed(0)
    t = Transformer(TransformerConfig.smoke(vocab_size=16, max_seq_len=9)).eval()
    x, seen = torch.randint(0, 16, (2, 8)), []
    plain = t(x, torch.tensor([1, 2]))
    hooked = t(x, torch.tensor([1, 2]), after_block=lambda i, h: (seen.append(i), h)[1])
    assert torch.equal(plain, hooked) and seen == list(range(t.config.n_layers))


def test_the_mixer_state_equals_linear_attention_over_earlier_blocks():
    torch.manual_seed(0)
    mixer = ScaleMixer(32, 4)
    torch.nn.init.normal_(mixer.proj.weight, std=0.1)
    x, spans = torch.randn(2, 14, 32), [(0, 1), (1, 5), (5, 14)]
    out = mixer(x, spans, MixerState()) - x
    # by hand: every query against every key of an earlier block, weights phi(q) . phi(k)
    q, k, v = mixer.qkv(mixer.norm(x)).reshape(2, 14, 3, 4, 8).permute(2, 0, 3, 1, 4)
    q, k = F.elu(q) + 1, F.elu(k) + 1
    block = torch.tensor([0] + [1] * 4 + [2] * 9)
    w = (q @ k.transpose(-1, -2)) * (block[None, :] < block[:, None])
    want = (w @ v) / w.sum(-1, keepdim=True).clamp_min(1e-6)
    assert torch.allclose(out, mixer.proj(want.transpose(1, 2).reshape(2, 14, 32)), atol=1e-5)
    assert (out[:, 0] == 0).all()                                       # the first block reads an empty state


def test_a_new_mixer_adds_nothing():
    x = torch.randn(2, 5, 16)
    assert torch.equal(ScaleMixer(16, 2)(x, [(0, 1), (1, 5)], MixerState()), x)


def test_mvar_is_block_causal_by_perturbation(mvar):
    L = sum(mvar.quantizer.lengths)
    ids, y = torch.randint(0, mvar.quantizer.n_codes, (3, L)), torch.tensor([0, 5, 9])
    with torch.no_grad():
        base = mvar(ids, y)
        for k, (a, b) in enumerate(mvar.spans):
            other = ids.clone(); other[:, a:b] = (other[:, a:b] + 3) % mvar.quantizer.n_codes
            moved = (mvar(other, y) - base).abs().amax((0, 2)) > 1e-5
            assert not moved[:b].any(), k                               # nothing up to scale k moves
            assert moved[b:].all(), k                                   # everything after it does


def test_mvar_attention_stays_inside_a_scale(mvar):
    a, b = mvar.spans[2]
    assert mvar.mask[a:b, a:b].all() and mvar.mask[a:b, 0].all()       # its own scale and the class token
    assert not mvar.mask[a:b, 1:a].any() and not mvar.mask[a:b, b:].any()


def test_greedy_mvar_sampling_equals_the_teacher_forced_argmax(mvar):
    y = torch.tensor([1, 4, 7])
    with torch.no_grad():
        ids = sample_mvar(mvar, y, temperature=0.0)
        assert torch.equal(mvar(ids, y).argmax(-1), ids)


def test_mvar_sampling_is_seeded_and_guided(mvar):
    y = torch.tensor([2, 3])
    a = sample_mvar(mvar, y, cfg_scale=3.0, temperature=1.0, top_p=0.9, generator=make_generator(5))
    b = sample_mvar(mvar, y, cfg_scale=3.0, temperature=1.0, top_p=0.9, generator=make_generator(5))
    c = sample_mvar(mvar, y, cfg_scale=3.0, temperature=1.0, top_p=0.9, generator=make_generator(6))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == (2, sum(mvar.quantizer.lengths))


def test_mvar_refuses_bad_input(mvar):
    q = mvar.quantizer
    with pytest.raises(InputError, match="abs_pos"):
        MVarPrior(prior_config(SMOKE, q.n_codes, sum(q.lengths), abs_pos=True), q)
    with pytest.raises(InputError, match="ids"): mvar(torch.zeros(2, 5, dtype=torch.long), torch.tensor([0, 1]))
    with pytest.raises(InputError, match="ids"): mvar(torch.full((2, sum(q.lengths)), q.n_codes), torch.tensor([0, 1]))
    with pytest.raises(InputError, match="labels"): sample_mvar(mvar, torch.tensor([0, 11]))


def test_mvar_cost_counts_pairs_by_hand():
    c = mvar_cost((1, 4, 9), 32, 4)
    assert c["pairs"] == 1 + 5 * 5 + 10 * 10 and c["positions"] == 10   # class token alone, then (1 + n)^2 per pass
    assert c["mixer_flops"] == (8 * 32 * 32 + 4 * 32 * 8) * 14 and c["state_floats"] == 32 * 8 + 32
    with pytest.raises(InputError, match="lengths"): mvar_cost((4, 9), 32, 4)
    with pytest.raises(InputError, match="lengths"): mvar_cost("149", 32, 4)
    with pytest.raises(InputError, match="n_heads"): mvar_cost((1, 4), 32, 5)


def test_fit_mvar_trains_saves_and_loads_back(tmp_path, entry_round_trip):
    entry_round_trip(fit_mvar)
    assert (tmp_path / "mvar_prior" / "model.safetensors").exists()
