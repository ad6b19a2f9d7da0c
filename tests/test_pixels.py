import pytest
import torch
from argen_lit.core import load_checkpoint, make_generator, save_checkpoint
from argen_lit.data import load_mnist5k
from argen_lit.pixels import (GatedPixelCNN, MaskedConv2d, NaivePixelCNN, PixelCNNConfig, dataset_bits_per_dim,
                              receptive_field, sample, sample_naive)


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
