import json
import pytest
import torch
import argen_lit.pixels as pixels
from argen_lit.core import load_checkpoint, make_generator, read_meta, save_checkpoint
from argen_lit.data import load_mnist5k
from argen_lit.pixels import (GatedPixelCNN, MaskedConv2d, NaivePixelCNN, PixelCNNConfig, dataset_bits_per_dim,
                              receptive_field, sample, sample_naive)
from argen_lit.pixels import (LONG_RECIPE, LONG_RECIPE_DIR, PixelTransformer, PixelTransformerConfig, load_pixel_transformer,
                              logistic_mixture_log_prob, logistic_mixture_log_probs, sample_raster, train_long_recipe,
                              train_pixel_transformer)


def small(**kw):
    torch.manual_seed(0)
    return GatedPixelCNN(PixelCNNConfig.smoke(**kw)).eval()


@pytest.fixture(scope="module")
def digits():
    x, y = load_mnist5k("test")
    pick = torch.arange(0, 1000, 100)  # one digit of each class
    return x[pick], y[pick]


@pytest.mark.parametrize("j", [0, 27, 28 * 10 + 13, 783])
def test_changing_pixel_j_leaves_earlier_logits_unchanged(j, digits):
    m = small()
    x, y = digits
    base = m(x, y)
    x2 = x.clone(); x2.view(len(x), -1)[:, j] = 255 - x2.view(len(x), -1)[:, j]
    moved = (m(x2, y) - base).abs().amax(1).flatten(1).amax(0) > 1e-6
    assert not moved[: j + 1].any()
    if j < 783: assert moved[j + 1:].any()


def test_masks_and_blind_spot():
    a, b = MaskedConv2d(1, 1, 3, "A").mask[0, 0], MaskedConv2d(1, 1, 3, "B").mask[0, 0]
    assert a[1, 1] == 0 and b[1, 1] == 1 and a[2].sum() == 0 and a[1, 2] == 0 and a[0].sum() == 3
    with pytest.raises(ValueError, match="mask"):
        MaskedConv2d(1, 1, 3, "C")
    torch.manual_seed(0)
    naive, gated = NaivePixelCNN(8, 5), small(n_layers=5)
    gn, gg = receptive_field(naive, 14, 14), receptive_field(gated, 14, 14)
    assert gn[13, 16:].sum() == 0 and gg[13, 16] > 0       # the naive stack's blind spot; the gated stack sees it
    for g in (gn, gg): assert g[14, 14:].sum() == 0 and g[15:].sum() == 0  # both causal


def test_untrained_model_is_near_8_bits_per_dim(digits):
    x, y = digits
    assert abs(dataset_bits_per_dim(small(), x, y) - 8.0) < 0.2


def test_row_cached_sampler_equals_full_network_and_is_seeded():
    m = small(image_size=8)
    y = torch.tensor([0, 3, 7, 10])  # 10 = the null class (unconditional)
    assert torch.equal(sample(m, y, temperature=0), sample_naive(m, y, temperature=0))
    a = sample(m, y, generator=make_generator(1))
    b = sample(m, y, generator=make_generator(1))
    c = sample(m, y, generator=make_generator(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a, sample_naive(m, y, generator=make_generator(1)))  # same draws, same order
    guided = sample(m, y, cfg_scale=3.0, generator=make_generator(1))
    assert torch.equal(guided, sample_naive(m, y, cfg_scale=3.0, generator=make_generator(1)))
    assert not torch.equal(guided, a)
    assert a.dtype == torch.uint8 and a.shape == (4, 1, 8, 8)


def test_checkpoint_round_trip(tmp_path):
    m = small(image_size=8)
    save_checkpoint(m, tmp_path)
    m2 = load_checkpoint(GatedPixelCNN(m.config), tmp_path)
    y = torch.tensor([1, 2])
    assert torch.equal(sample(m, y, generator=make_generator(0)), sample(m2, y, generator=make_generator(0)))


def test_bad_input_gets_clear_errors(digits):
    m = small()
    x, y = digits
    with pytest.raises(TypeError, match="images"):
        m(x.float(), y)
    with pytest.raises(ValueError, match=r"images: values must lie in \[0, 255\]"):
        m(x.long() + 1, y)
    with pytest.raises(ValueError, match="images: expected"):
        m(x[:, :, :20], y)
    with pytest.raises(ValueError, match="labels"):
        m(x, torch.full_like(y, 11))
    with pytest.raises(ValueError, match="labels"):
        m(x, y[:3])
    with pytest.raises(ValueError, match="labels"):
        sample(m, torch.tensor([12]))
    with pytest.raises(ValueError, match="temperature"):
        sample(m, torch.tensor([1]), temperature=-1)
    with pytest.raises(ValueError, match="cfg_scale"):
        sample(m, torch.tensor([1]), cfg_scale=-0.5)


def test_training_runs_from_the_library_and_lowers_the_loss(digits):
    from argen_lit.pixels import train_pixelcnn
    m = small()
    x, y = digits
    losses = train_pixelcnn(m, x, y, steps=12, batch_size=5, lr=3e-3)
    assert len(losses) == 12 and losses[-1] < losses[0]
    assert not m.training  # left in eval mode


# --- the pixel transformer (a discretized logistic mixture head on the shared transformer)


def tiny_pt(grid=(8, 8), **kw):
    torch.manual_seed(0)
    return PixelTransformer(PixelTransformerConfig.smoke(grid=grid, max_seq_len=grid[0] * grid[1] + 1, **kw)).eval()


def test_mixture_sums_to_one_over_the_256_values():
    g = torch.Generator().manual_seed(0)
    params = torch.randn(50, 15, generator=g) * 3
    params[0, 10:] = -20.0                      # needle-sharp components (log scale below the -7 floor)
    params[1, 5:10] = torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0])  # means beyond the intensity range
    params[2, 10:] = 8.0                         # flat components
    table = logistic_mixture_log_probs(params)
    assert table.shape == (50, 256) and torch.isfinite(table).all()
    assert torch.allclose(table.logsumexp(-1), torch.zeros(50), atol=1e-5)
    values = torch.randint(0, 256, (50,), generator=g); values[:2] = torch.tensor([0, 255])
    assert torch.allclose(logistic_mixture_log_prob(params, values), table.gather(1, values[:, None])[:, 0], atol=1e-5)
    # one sharp component on black puts (about) half its mass on intensity 0, the rest just above it
    sharp = torch.tensor([[0.0, -1.0, -5.0]])
    assert 0.45 < logistic_mixture_log_probs(sharp).exp()[0, 0] < 0.95


def test_mixture_head_has_a_gradient_everywhere():
    params = (torch.randn(4, 15) * 3).requires_grad_()
    logistic_mixture_log_prob(params, torch.tensor([0, 17, 200, 255])).sum().backward()
    assert torch.isfinite(params.grad).all() and (params.grad != 0).any()


@pytest.mark.parametrize("j", [0, 7, 27, 62])
def test_pixel_transformer_is_causal(j):
    m = tiny_pt()
    x = torch.randint(0, 256, (3, 64), generator=torch.Generator().manual_seed(j))
    y = torch.tensor([1, 5, 10])
    x2 = x.clone(); x2[:, j] = 255 - x2[:, j]
    moved = (m(x2[:, :-1], y) - m(x[:, :-1], y)).abs().amax(-1).amax(0) > 1e-6   # position p predicts pixel p
    assert not moved[: j + 1].any() and moved[j + 1:].all()


def test_pixel_transformer_input_gradient_sees_every_earlier_pixel_and_nothing_after():
    m = tiny_pt(grid=(28, 28))
    for r, c in [(0, 0), (14, 14), (27, 27)]:
        g = receptive_field(m, r, c).flatten(); j = r * 28 + c
        assert (g[:j] > 0).all() and g[j:].sum() == 0


def test_nll_is_the_likelihood_of_the_forward_distribution(digits):
    for k in (5, 0):                           # mixture head and softmax head
        m = tiny_pt(grid=(28, 28), n_mixtures=k)
        x, y = digits
        tok = x.flatten(1).long()
        lp = m(tok[:, :-1], y)
        assert torch.allclose(lp.logsumexp(-1), torch.zeros(lp.shape[:2]), atol=1e-4)
        assert torch.allclose(m.nll(x, y), -lp.log_softmax(-1).gather(-1, tok[..., None])[..., 0].sum(1), rtol=1e-5)


def test_kv_cached_sampler_equals_the_full_network_and_is_seeded():
    m = tiny_pt()
    y = torch.tensor([0, 3, 10])
    assert torch.equal(sample_raster(m, y, temperature=0), sample_raster(m, y, temperature=0, cache="none"))
    a = sample_raster(m, y, generator=make_generator(1))
    assert a.shape == (3, 1, 8, 8) and a.dtype == torch.uint8
    assert torch.equal(a, sample_raster(m, y, generator=make_generator(1)))
    assert not torch.equal(a, sample_raster(m, y, generator=make_generator(2)))
    assert torch.equal(a, sample_raster(m, y, generator=make_generator(1), cache="none"))  # same draws, same order
    guided = sample_raster(m, y, cfg_scale=3.0, generator=make_generator(1))
    assert torch.equal(guided, sample_raster(m, y, cfg_scale=3.0, generator=make_generator(1), cache="none"))


def test_pixel_transformer_checkpoint_round_trip(tmp_path):
    m = tiny_pt()
    save_checkpoint(m, tmp_path / "pt")
    again = load_pixel_transformer(tmp_path / "pt")
    y = torch.tensor([2, 7])
    assert torch.equal(sample_raster(again, y, generator=make_generator(3)), sample_raster(m, y, generator=make_generator(3)))


def test_pixel_transformer_trains_on_the_one_loop(digits):
    x, y = load_mnist5k("train")
    torch.manual_seed(0)
    m = PixelTransformer(PixelTransformerConfig.smoke(d_model=32, n_layers=1))
    losses = train_pixel_transformer(m, x[:256], y[:256], steps=30, batch_size=16, lr=3e-3)
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5


def test_long_recipe_saves_its_provenance_and_loads_back(tmp_path, monkeypatch):
    monkeypatch.setattr(pixels, "LONG_RECIPE", {**LONG_RECIPE, "d_model": 32, "n_layers": 1, "aug_copies": 1, "batch_size": 4})
    train_long_recipe(tmp_path / "long", steps=2)
    meta = read_meta(tmp_path / "long")
    prov = meta["provenance"]
    assert prov["steps"] == 2 and prov["seconds"] > 0 and "CPU" in prov["device"] and "train_long_recipe" in prov["command"]
    assert meta["recipe"]["d_model"] == 32
    assert load_pixel_transformer(tmp_path / "long").config.d_model == 32
    assert not load_pixel_transformer(tmp_path / "long").config.class_every_position     # as LONG_RECIPE says
    train_long_recipe(tmp_path / "every", steps=1, class_every_position=True)              # a change of the recipe
    meta = read_meta(tmp_path / "every")
    assert meta["recipe"]["class_every_position"] and load_pixel_transformer(tmp_path / "every").config.class_every_position
    assert "class_every_position=True" in meta["provenance"]["command"]
    with pytest.raises(ValueError, match="not keys of LONG_RECIPE"): train_long_recipe(tmp_path / "x", steps=1, widht=64)


def test_a_checkpoint_from_before_class_every_position_loads_with_it_off(tmp_path, digits):
    m = tiny_pt(grid=(28, 28), class_every_position=False).eval()
    save_checkpoint(m, tmp_path / "old")
    f = tmp_path / "old" / "config.json"; rec = json.loads(f.read_text())
    del rec["config"]["class_every_position"]; f.write_text(json.dumps(rec))   # as written before the field existed
    old = load_pixel_transformer(tmp_path / "old")
    x, y = digits
    assert not old.config.class_every_position and torch.equal(old.nll(x[:2], y[:2]), m.nll(x[:2], y[:2]))


def test_the_shipped_long_recipe_is_the_trained_model(digits):
    m = load_pixel_transformer()
    c, prov = m.config, read_meta(LONG_RECIPE_DIR)["provenance"]
    assert (c.d_model, c.n_layers, c.n_mixtures) == (LONG_RECIPE["d_model"], LONG_RECIPE["n_layers"], LONG_RECIPE["n_mixtures"])
    assert prov["steps"] == LONG_RECIPE["steps"] and "train_long_recipe" in prov["command"]
    assert read_meta(LONG_RECIPE_DIR)["recipe"] == LONG_RECIPE and c.class_every_position == LONG_RECIPE["class_every_position"]
    x, y = digits
    assert dataset_bits_per_dim(m, x, y) < 1.4   # trained: 1.18 on the whole test split (an untrained model sits near 8)


def test_pixel_transformer_bad_input_gets_clear_errors(digits):
    x, y = digits
    m = tiny_pt(grid=(28, 28))
    with pytest.raises(ValueError, match="vocab_size"): PixelTransformerConfig(vocab_size=16)
    with pytest.raises(ValueError, match="grid"): PixelTransformerConfig(grid=(8, 8))
    with pytest.raises(ValueError, match="n_mixtures"): PixelTransformerConfig(n_mixtures=-1)
    with pytest.raises(ValueError, match="config"): PixelTransformer(PixelCNNConfig())
    with pytest.raises(ValueError, match="images"): m.nll(x[:, :, :14], y)
    with pytest.raises(ValueError, match="images"): m.nll(x.float(), y)
    with pytest.raises(ValueError, match="labels"): m.nll(x, y + 11)
    with pytest.raises(ValueError, match="model"): sample_raster(small(), torch.tensor([1]))
    with pytest.raises(ValueError, match="cfg_scale"): sample_raster(m, torch.tensor([1]), cfg_scale=-1.0)
    with pytest.raises(ValueError, match="labels"): sample_raster(m, torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="params"): logistic_mixture_log_prob(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="values"): logistic_mixture_log_prob(torch.zeros(2, 3), torch.tensor([0, 256]))
    with pytest.raises(ValueError, match="steps"): train_long_recipe("/nonexistent/never_written", steps=0)
