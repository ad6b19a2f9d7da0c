import pytest
import torch
from einops import rearrange
from argen_lit.core import make_generator
from argen_lit.data import load_mnist5k
from argen_lit.recipes import get_budget
from argen_lit.tokenizers_1d import (Tokenizer1D, Tokenizer1DConfig, fit_flextok, grid_prefix_decode, prefix_lengths,
                                     prefix_mask, tokenizer_1d)
from argen_lit.vq import Tokenizer, TokenizerConfig, train_tokenizer


@pytest.fixture(scope="module")
def tok():
    torch.manual_seed(0)
    x, _ = load_mnist5k("test")
    t = Tokenizer1D(Tokenizer1DConfig.smoke())
    train_tokenizer(t, x[:256], steps=3)
    return t.eval(), x[:6]


def test_prefix_lengths_are_powers_of_two_then_the_length():
    assert prefix_lengths(32) == [1, 2, 4, 8, 16, 32]
    assert prefix_lengths(5) == [1, 2, 4, 5] and prefix_lengths(1) == [1] and prefix_lengths(2) == [1, 2]
    for bad in (0, -3, 2.0, "8", True):
        with pytest.raises(ValueError, match="n_tokens"): prefix_lengths(bad)


def test_prefix_mask_keeps_the_first_keep_positions():
    m = prefix_mask(torch.tensor([1, 3, 5]), 5)
    assert torch.equal(m.int(), torch.tensor([[1, 0, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]))


def test_every_token_reads_the_whole_digit(tok):
    t, x = tok
    base = t.latents(x)
    assert base.shape == (6, t.n_tokens, t.config.code_dim)
    for rows in (slice(0, 7), slice(21, 28)):                      # the top or the bottom quarter of the image
        poked = x.clone(); poked[:, :, rows] = 255 - poked[:, :, rows]
        moved = (t.latents(poked) - base).abs().amax((0, 2))
        assert (moved > 1e-6).all()                                # every token, the first included, sees it


def test_nested_dropout_only_ever_drops_a_suffix(tok):
    t, x = tok
    with torch.no_grad():
        zq = rearrange(t.quantizer(rearrange(t.latents(x), "b k d -> b d 1 k")).z_q, "b d 1 k -> b k d")
        keep = torch.tensor([1, 2, 3, 5, 8, 8])                    # one prefix length per image
        out = t.reconstruct(zq, keep)
        for i, k in enumerate(keep.tolist()):
            after, before = zq.clone(), zq.clone()
            if k < t.n_tokens: after[i, k:] += 1.0
            before[i, k - 1] += 1.0
            assert torch.equal(t.reconstruct(after, keep)[i], out[i])        # past the prefix: ignored
            assert not torch.equal(t.reconstruct(before, keep)[i], out[i])   # inside it: read
    t.train()
    try:
        drawn = torch.cat([t.nested_keep(64, "cpu") for _ in range(20)])
    finally:
        t.eval()
    assert set(drawn.tolist()) == set(prefix_lengths(t.n_tokens))


def test_every_prefix_decodes_and_ids_are_deterministic(tok):
    t, x = tok
    ids = t.encode(x)
    assert ids.shape == (6, t.n_tokens) and ids.dtype == torch.long and ((ids >= 0) & (ids < t.n_codes)).all()
    assert torch.equal(t.encode(x), ids) and torch.equal(t.encode(x, batch_size=4), ids)   # any batching
    for k in range(1, t.n_tokens + 1):
        img = t.decode(ids[:, :k])
        assert img.shape == (6, 1, 28, 28) and img.dtype == torch.uint8
        via_forward = (t(x, keep=k)[0] * 255).round().to(torch.uint8)
        assert (img.int() - via_forward.int()).abs().max() <= 1, k
    assert not torch.equal(t.decode(ids[:, :1]), t.decode(ids))    # a longer prefix adds something
    assert torch.equal(t.quantizer.ids_of(t.quantizer.lookup(ids.flatten())), ids.flatten())  # codes <-> ids


def test_bad_input_is_refused_by_name(tok):
    t, x = tok
    ids = t.encode(x)
    with pytest.raises(ValueError, match="ids"): t.decode(ids[:, :0])                     # k = 0
    with pytest.raises(ValueError, match="ids"): t.decode(torch.cat([ids, ids[:, :1]], 1))  # k > K
    with pytest.raises(ValueError, match="ids"): t.decode(ids + t.n_codes)
    with pytest.raises(ValueError, match="ids"): t.decode(ids[0])
    for keep in (0, t.n_tokens + 1, torch.zeros(6, dtype=torch.long), torch.ones(5, dtype=torch.long), 2.5):
        with pytest.raises(ValueError, match="keep"): t(x, keep=keep)
    with pytest.raises(ValueError, match="images"): t.encode(x.float())
    with pytest.raises(ValueError, match="images"): t.encode(x[:, :, :14])
    with pytest.raises(ValueError, match="channels"): Tokenizer1DConfig(channels=12)
    with pytest.raises(ValueError, match="n_tokens"): Tokenizer1DConfig(n_tokens=0)


def test_grid_prefix_keeps_the_first_raster_positions():
    torch.manual_seed(0)
    g = Tokenizer(TokenizerConfig.smoke(quantizer="ema")).eval()
    x, _ = load_mnist5k("test")
    ids = g.encode(x[:4])
    assert torch.equal(grid_prefix_decode(g, ids, 49), g.decode(ids))
    assert not torch.equal(grid_prefix_decode(g, ids, 10), g.decode(ids))
    changed = ids.flatten(1).clone(); changed[:, 5:] = (changed[:, 5:] + 1) % g.n_codes  # raster positions 5..48 only
    assert torch.equal(grid_prefix_decode(g, changed.reshape(4, 7, 7), 5), grid_prefix_decode(g, ids, 5))
    for k in (0, 50, 1.5):
        with pytest.raises(ValueError, match="k"): grid_prefix_decode(g, ids, k)
    with pytest.raises(ValueError, match="ids"): grid_prefix_decode(g, ids.flatten(1), 5)


def test_the_entry_trains_saves_loads_back_and_samples_by_seed(tmp_path, entry_round_trip):
    first, again, data = entry_round_trip(fit_flextok)
    labels = torch.arange(4)
    assert not torch.equal(again.sample(labels, make_generator(0)), again.sample(labels, make_generator(1)))
    assert (tmp_path / "tokenizer_1d_k32" / "model.safetensors").exists() and (tmp_path / "prior_1d_k32" / "config.json").exists()
    tok, _ = tokenizer_1d(get_budget("smoke"), data, tmp_path, "cpu")
    assert torch.equal(tok.encode(data.xte[:8]), first.modules[0].encode(data.xte[:8]))
