import copy
import pytest
import torch
from einops import rearrange
from argen_lit.core import make_generator
from argen_lit.data import load_mnist5k
from argen_lit.recipes import get_budget, prior_config
from argen_lit.tokenizers_1d import (DynamicCodes, DynamicConfig, DynamicTokenizer, GrammarWalk, HitaConfig, HitaTokenizer,
                                     Tokenizer1D, Tokenizer1DConfig, common_map, density_threshold, detail_objective,
                                     detail_size, detail_targets, fit_detailflow, fit_dq, fit_flextok, fit_hita, generate_dq, grid_prefix_decode,
                                     prefix_lengths, prefix_mask, region_density, sequence_lengths, tokenizer_1d)
from argen_lit.transformer import Transformer
from argen_lit.vq import Tokenizer, TokenizerConfig, train_tokenizer


def smoke_trained(build, n_images: int):
    "A tokenizer built by `build()` after seed 0, trained 3 steps on 256 test digits, in eval mode; and `n_images` digits."
    torch.manual_seed(0)
    x, _ = load_mnist5k("test")
    t = build()
    train_tokenizer(t, x[:256], steps=3)
    return t.eval(), x[:n_images]


@pytest.fixture(scope="module")
def tok(): return smoke_trained(lambda: Tokenizer1D(Tokenizer1DConfig.smoke()), 6)


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


# DetailFlow

def test_detail_targets_sharpen_with_the_prefix_and_the_full_prefix_is_the_image():
    x, _ = load_mnist5k("test")
    x = x[:8]
    assert [detail_size(k, 32) for k in prefix_lengths(32)] == [5, 7, 10, 14, 20, 28]
    full = detail_targets(x, torch.full((8,), 32), 32)
    assert torch.equal(full, x.float() / 255)
    def roughness(t): return (t[..., 1:, :] - t[..., :-1, :]).abs().mean().item()
    rough = [roughness(detail_targets(x, torch.full((8,), k), 32)) for k in prefix_lengths(32)]
    assert rough == sorted(rough)                                    # each prefix is asked for a sharper picture
    keep = torch.tensor([1, 32, 4, 4, 8, 1, 16, 2])                  # a mixed batch: each row its own target
    mixed = detail_targets(x, keep, 32)
    for i, k in enumerate(keep.tolist()):
        assert torch.equal(mixed[i], detail_targets(x[i:i + 1], torch.tensor([k]), 32)[0])
    for k in (0, 33, 1.5):
        with pytest.raises(ValueError, match="k"): detail_size(k, 32)
    for keep in (torch.full((7,), 4), torch.full((8,), 0), torch.full((8,), 33), torch.full((8,), 4.0)):
        with pytest.raises(ValueError, match="keep"): detail_targets(x, keep, 32)


def test_detail_objective_compares_each_prefix_with_its_own_target(tok, monkeypatch):
    t, x = tok
    t.train()
    try:
        monkeypatch.setattr(t, "nested_keep", lambda b, device: torch.full((b,), 1, device=device))
        state = copy.deepcopy(t.state_dict())                        # the EMA codebook moves on every training call
        loss, mse = detail_objective(t, x)
        t.load_state_dict(state)
        rec, _ = t(x, keep=1)
        assert torch.allclose(mse, torch.nn.functional.mse_loss(rec, detail_targets(x, torch.full((6,), 1), t.n_tokens)))
        assert loss.requires_grad and loss >= mse
    finally:
        t.eval()


# Hita

@pytest.fixture(scope="module")
def hita(): return smoke_trained(lambda: HitaTokenizer(HitaConfig.smoke()), 6)


def test_hita_is_causal_holistic_first(hita):
    h, x = hita
    ids = h.encode(x)
    H = h.config.n_holistic
    assert ids.shape == (6, H + 49) and h.n_tokens == H + 49
    with torch.no_grad():
        hq, pq = h.quantize(x)
        saved = h.to_patch.weight.clone()
        h.to_patch.weight.add_(torch.randn_like(saved))              # the patch path changes ...
        hq2, pq2 = h.quantize(x)
        h.to_patch.weight.copy_(saved)
        assert torch.equal(hq2.indices, hq.indices)                  # ... the holistic tokens do not
        assert not torch.equal(pq2.z_q, pq.z_q)
        saved = h.read.bias.clone()
        h.read.bias.add_(torch.randn_like(saved))                    # the holistic tokens change ...
        _, pq3 = h.quantize(x)
        h.read.bias.copy_(saved)
        assert not torch.allclose(pq3.z_q, pq.z_q)                   # ... and the patch tokens read them


def test_hita_nested_dropout_only_drops_a_suffix_of_the_holistic_tokens(hita):
    h, x = hita
    H = h.config.n_holistic
    with torch.no_grad():
        hq, pq = h.quantize(x)
        hz = rearrange(hq.z_q, "b d 1 k -> b k d")
        kept = torch.ones(6, 7, 7, dtype=torch.bool)
        keep = torch.tensor([1, 2, H, 1, 2, H])
        out = h.reconstruct(hz, pq.z_q, kept, keep)
        for i, k in enumerate(keep.tolist()):
            after, inside = hz.clone(), hz.clone()
            if k < H: after[i, k:] += 1.0
            inside[i, k - 1] += 1.0
            assert torch.equal(h.reconstruct(after, pq.z_q, kept, keep)[i], out[i])
            assert not torch.equal(h.reconstruct(inside, pq.z_q, kept, keep)[i], out[i])
    with pytest.raises(ValueError, match="patch_drop"): HitaConfig(patch_drop=1.5)


def test_hita_decodes_every_prefix_from_the_holistic_tokens_on(hita):
    h, x = hita
    ids, H = h.encode(x), h.config.n_holistic
    assert torch.equal(h.encode(x, batch_size=4), ids)
    for m in (0, 1, 16, 48, 49):
        kept = (torch.arange(49) < m).reshape(1, 7, 7).expand(6, 7, 7)
        via_forward = (h(x, kept=kept)[0] * 255).round().to(torch.uint8)
        assert (h.decode(ids[:, :H + m]).int() - via_forward.int()).abs().max() <= 1, m
    assert not torch.equal(h.decode(ids[:, :H]), h.decode(ids))
    for bad in (ids[:, :H - 1], torch.cat([ids, ids[:, :1]], 1), ids + h.n_codes, ids[0]):
        with pytest.raises(ValueError, match="ids"): h.decode(bad)
    with pytest.raises(ValueError, match="kept"): h(x, kept=torch.ones(6, 7, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="kept"): h(x, kept=torch.ones(6, 7, 7))
    with pytest.raises(ValueError, match="n_holistic"): HitaConfig(n_holistic=0)


# DQ-VAE

@pytest.fixture(scope="module")
def dq(): return smoke_trained(lambda: DynamicTokenizer(DynamicConfig.smoke(threshold=0.05)), 32)


def test_dq_lengths_match_the_region_map_and_decode_back(dq):
    d, x = dq
    R, end = d.config.regions, d.config.end
    seq = d.encode(x)
    maps = d.region_map(x)
    assert seq.shape == (32, 4 * R * R + 1) and ((seq >= 0) & (seq <= end)).all()
    assert torch.equal((seq != end).sum(1), sequence_lengths(maps))
    assert maps.any() and not maps.all()                             # both levels occur in these digits
    assert torch.equal(maps, region_density(x) > d.config.threshold)
    back = d.from_sequence(seq)
    codes = d(x)[1]
    assert torch.equal(back.fine_map, maps)
    assert torch.equal(back.coarse[~maps], codes.coarse[~maps])
    fine_cells = maps.repeat_interleave(2, 1).repeat_interleave(2, 2)
    assert torch.equal(back.fine[fine_cells], codes.fine[fine_cells])
    assert (d.decode(seq).int() - (d(x)[0] * 255).round().int()).abs().max() <= 1
    assert torch.equal(d.encode(x, batch_size=5), seq)
    assert torch.equal(d.to_sequence(back), seq)                     # codes -> sequence -> codes -> the same sequence
    assert torch.equal(d.from_sequence(seq[:, :(seq != end).sum(1).max() + 1]).fine_map, maps)  # trailing padding optional


def test_dq_round_trips_any_region_map_and_random_codes(dq):
    d, _ = dq
    g = torch.Generator().manual_seed(0)
    R, n = d.config.regions, d.n_codes
    maps = torch.rand(50, R, R, generator=g) < torch.rand(50, 1, 1, generator=g)
    maps[0], maps[1] = False, True                                   # all coarse (16 tokens) and all fine (64)
    codes = DynamicCodes(torch.randint(n, (50, R, R), generator=g), torch.randint(n, (50, 2 * R, 2 * R), generator=g), maps, None)
    seq = d.to_sequence(codes)
    assert (seq != d.config.end).sum(1)[:2].tolist() == [16, 64]
    assert torch.equal((seq != d.config.end).sum(1), sequence_lengths(maps))
    back = d.from_sequence(seq)
    assert torch.equal(back.fine_map, maps) and torch.equal(back.coarse[~maps], codes.coarse[~maps])
    cells = maps.repeat_interleave(2, 1).repeat_interleave(2, 2)
    assert torch.equal(back.fine[cells], codes.fine[cells])
    states = d.grammar_states(seq)
    assert d.allowed(states[:, :-1]).gather(-1, seq[..., None]).all()
    assert (states[:, -1, 0] == R * R).all()


def test_dq_refuses_sequences_that_break_the_grammar_and_bad_maps(dq):
    d, x = dq
    R, n, end = d.config.regions, d.n_codes, d.config.end
    seq = d.encode(x[:4])
    fine_row = int(d.region_map(x[:4]).flatten(1).any(1).nonzero()[0, 0])
    bad = seq.clone()
    first_fine = int(((bad[fine_row] >= n) & (bad[fine_row] < 2 * n)).nonzero()[0, 0])
    bad[fine_row, first_fine + 1] = 0                                # a coarse id inside a fine region
    after_end = seq.clone(); after_end[:, -1] = 5                    # an id after END
    for broken in (bad, seq[:, :10], seq + 2 * n + 1, seq.float(), seq[0], after_end):
        with pytest.raises(ValueError, match="seq"): d.from_sequence(broken)
    assert torch.equal(d.decode(seq.int()), d.decode(seq))          # any integer dtype
    with pytest.raises(ValueError, match="images"): region_density(x.float() / 255)
    with pytest.raises(ValueError, match="images"): region_density(x[:, :, :20])
    with pytest.raises(ValueError, match="seq"): d.decode(torch.full((2, 5), end))  # END before any region
    for m in (torch.ones(4, R, R + 1, dtype=torch.bool), torch.ones(4, R, R), torch.ones(3, R, R, dtype=torch.bool)):
        with pytest.raises(ValueError, match="fine_map"): d.encode(x[:4], m)
        with pytest.raises(ValueError, match="fine_map"): d(x[:4], m)
    with pytest.raises(ValueError, match="images"): d.encode(x[:, :, :20])
    with pytest.raises(ValueError, match="pad"): DynamicConfig(pad=1)
    with pytest.raises(ValueError, match="threshold"): DynamicConfig(threshold=-0.1)


def test_dq_threshold_and_maps_follow_the_density():
    x, _ = load_mnist5k("train")
    x = x[:500]
    for tokens in (22, 28, 34):
        thr = density_threshold(x, tokens)
        assert abs(sequence_lengths(region_density(x) > thr).float().mean().item() - tokens) < 0.5
    with pytest.raises(ValueError, match="mean_tokens"): density_threshold(x, 70)
    d = DynamicTokenizer(DynamicConfig.smoke(threshold=density_threshold(x, 28)))
    fixed = common_map(d, x, 4)
    assert fixed.shape == (4, 4) and fixed.sum() == 4
    counts = d.region_map(x).flatten(1).sum(0)
    assert counts[fixed.flatten()].min() >= counts[~fixed.flatten()].max()   # the regions most often fine
    d.train()
    maps = torch.cat([d.random_map(x[:50]) for _ in range(20)])
    n_fine = maps.flatten(1).sum(1)
    assert set(n_fine.tolist()) == set(range(17))                   # every budget, 0 to 16 fine regions
    dens = region_density(x[:50]).repeat(20, 1, 1).flatten(1)
    fine, coarse = maps.flatten(1), ~maps.flatten(1)
    lowest_fine = torch.where(fine, dens, torch.inf).amin(1)
    highest_coarse = torch.where(coarse, dens, -torch.inf).amax(1)
    assert (lowest_fine >= highest_coarse).all()                     # always the densest regions first


def test_dq_prior_samples_only_sequences_that_decode_and_by_seed(dq):
    d, _ = dq
    torch.manual_seed(0)
    prior = Transformer(prior_config(get_budget("smoke"), d.vocab_size, 1 + d.config.max_len, rope="1d", grid=(),
                                     state_sizes=(d.config.regions ** 2 + 1, 4))).eval()
    labels = torch.arange(10)
    seq = generate_dq(d, prior, labels, make_generator(0), cfg_scale=2.0)
    assert torch.equal(generate_dq(d, prior, labels, make_generator(0), cfg_scale=2.0), seq)
    assert not torch.equal(generate_dq(d, prior, labels, make_generator(1), cfg_scale=2.0), seq)
    codes = d.from_sequence(seq)                                     # an untrained prior, still only grammatical rows
    assert torch.equal(seq[:, :-1].ne(d.config.end).sum(1), sequence_lengths(codes.fine_map))
    assert d.decode(seq).shape == (10, 1, 28, 28)
    other = Transformer(prior_config(get_budget("smoke"), d.n_codes, 10, rope="1d", grid=()))
    with pytest.raises(ValueError, match="vocab_size"): generate_dq(d, other, labels)
    with pytest.raises(ValueError, match="labels"): generate_dq(d, prior, None)
    walk = GrammarWalk(d, 10, "cpu")
    walk.state_after(seq[:, :5])
    with pytest.raises(ValueError, match="prefix"): walk.state_after(seq[:, :3])   # a used walk is not silently stale


def test_dq_sampling_tells_the_prior_the_states_it_was_trained_with(dq, monkeypatch):
    d, _ = dq
    torch.manual_seed(0)
    prior = Transformer(prior_config(get_budget("smoke"), d.vocab_size, 1 + d.config.max_len, rope="1d", grid=(),
                                     state_sizes=(d.config.regions ** 2 + 1, 4))).eval()
    seen, forward = [], prior.forward
    def spy(*args, **kw):
        seen.append(kw["states"][:5])                                # the conditional half of the guided batch
        return forward(*args, **kw)
    monkeypatch.setattr(prior, "forward", spy)
    seq = generate_dq(d, prior, torch.arange(5), make_generator(0), cfg_scale=2.0)
    told = torch.cat(seen, 1)
    assert torch.equal(told, d.grammar_states(seq)[:, :told.shape[1]])


@pytest.mark.parametrize("fit, folders", [(fit_detailflow, ("detailflow_k32", "prior_detailflow_k32")),
                                          (fit_hita, ("hita_h8", "prior_hita_k57")),
                                          (fit_dq, ("dq_tokenizer_t40", "dq_prior"))])
def test_the_other_entries_train_save_load_back_and_sample_by_seed(tmp_path, entry_round_trip, fit, folders):
    first, again, data = entry_round_trip(fit)
    assert not torch.equal(again.sample(torch.arange(4), make_generator(0)), again.sample(torch.arange(4), make_generator(1)))
    for f in folders: assert (tmp_path / f / "model.safetensors").exists() and (tmp_path / f / "config.json").exists()
