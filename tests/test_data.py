import pytest
import torch
from PIL import Image
from argen_lit.data import (augment_digits, show_grid, shift_pixels, image_grid, load_dataset, load_digits8, load_image_folder, load_mnist5k,
                            load_torchvision, make_loader, endless)


def test_mnist5k_split_is_fixed_disjoint_and_balanced():
    xtr, ytr = load_mnist5k("train"); xte, yte = load_mnist5k("test"); xall, yall = load_mnist5k("all")
    assert xtr.shape == (4000, 1, 28, 28) and xte.shape == (1000, 1, 28, 28) and xall.shape == (5000, 1, 28, 28)
    assert xtr.dtype == xte.dtype == torch.uint8 and ytr.dtype == torch.int64
    assert (torch.bincount(ytr) == 400).all() and (torch.bincount(yte) == 100).all()
    # train and test share no image
    tr = {bytes(x.numpy()) for x in xtr}; te = {bytes(x.numpy()) for x in xte}
    assert not tr & te
    # per class, the first 400 train: the first train image of class 3 is the first class-3 image overall
    assert torch.equal(xtr[ytr == 3][0], xall[yall == 3][0]) and torch.equal(xte[yte == 3][-1], xall[yall == 3][-1])
    assert torch.equal(load_mnist5k("train")[0], xtr)  # deterministic


def test_unknown_split_and_dataset_are_clear_errors():
    with pytest.raises(ValueError, match="split"):
        load_mnist5k("valid")
    with pytest.raises(ValueError, match="name"):
        load_dataset("imagenet")


def test_digits8_levels_and_scaling():
    x, y = load_digits8("train", levels=True)
    assert x.shape[1:] == (1, 8, 8) and x.max() == 16 and x.dtype == torch.uint8
    x255, _ = load_digits8("train")
    assert x255.max() == 255
    assert len(load_digits8("train")[0]) + len(load_digits8("test")[0]) == 1797


def test_image_folder_round_trip_and_errors(tmp_path):
    xtr, ytr = load_mnist5k("train")
    for c in (0, 1):
        (tmp_path / str(c)).mkdir()
        for i in range(2): Image.fromarray(xtr[ytr == c][i, 0].numpy()).save(tmp_path / str(c) / f"{i}.png")
    x, y, classes = load_image_folder(tmp_path)
    assert classes == ["0", "1"] and y.tolist() == [0, 0, 1, 1]
    assert torch.equal(x[2], xtr[ytr == 1][0])
    with pytest.raises(FileNotFoundError, match="path"):
        load_image_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        load_image_folder(tmp_path / "empty")


def test_torchvision_never_downloads_unless_asked(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_torchvision("MNIST", tmp_path)
    assert not any(tmp_path.rglob("*.gz"))  # nothing fetched
    with pytest.raises(ValueError, match="name"):
        load_torchvision("ImageNet", tmp_path)


def test_loader_seeded_shuffle_and_grid():
    x, y = load_mnist5k("test")
    a = next(iter(make_loader(x, y, batch_size=16, seed=1)))[1]
    b = next(iter(make_loader(x, y, batch_size=16, seed=1)))[1]
    c = next(iter(make_loader(x, y, batch_size=16, seed=2)))[1]
    assert torch.equal(a, b) and not torch.equal(a, c)
    g = image_grid(x[:20], nrow=10, pad=2)
    assert g.dtype == torch.uint8 and g.shape == (3, 2 * 30 + 2, 10 * 30 + 2)
    with pytest.raises(ValueError, match="images"):
        image_grid(x[0])
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(x, y, batch_size=0)


def test_endless_restarts_passes_and_refuses_an_empty_loader():
    x = torch.arange(10).reshape(10, 1, 1, 1).to(torch.uint8)
    batches = endless(make_loader(x, batch_size=4, seed=0, drop_last=True))
    seen = [next(batches).flatten().tolist() for _ in range(5)]           # 2 batches per pass: 2.5 passes
    assert all(len(b) == 4 for b in seen)
    assert len(set(seen[0] + seen[1])) == 8 and len(set(seen[2] + seen[3])) == 8
    assert seen[:2] != seen[2:4]                                          # each pass is reshuffled
    with pytest.raises(ValueError, match="batch_size"):                  # a loader that could give no batch is refused
        make_loader(x[:3], batch_size=4, drop_last=True)
    with pytest.raises(ValueError, match="loader"):                      # no hang on a loader with no batches
        next(endless([]))
    with pytest.raises(ValueError, match="images"):
        make_loader(x[:0], batch_size=4)


def test_shift_copies_keep_every_intensity_and_the_ink():
    x, y = load_mnist5k("test")
    x, y = x[:40], y[:40]
    xa, ya = augment_digits(x, y, copies=3, seed=1, warp=False)
    assert torch.equal(xa[:40], x) and torch.equal(ya, y.repeat(3)) and not torch.equal(xa[40:80], x)
    assert torch.equal(augment_digits(x, y, copies=3, seed=1, warp=False)[0], xa)         # seeded
    for orig, copy in zip(x.repeat(2, 1, 1, 1), xa[40:]):
        # a whole-pixel move: the copy is the original shifted by some (dy, dx) within 2, its ink unchanged
        # (MNIST digits leave a margin of 4 pixels, so nothing is pushed out of the frame)
        assert any(torch.equal(torch.roll(orig, (dy, dx), (1, 2)), copy) for dy in range(-2, 3) for dx in range(-2, 3))
    warped = augment_digits(x, y, copies=3, seed=1)[0][40:]
    grey = lambda t: ((t > 0) & (t < 255)).float().mean()                                   # interpolation adds grey levels
    assert grey(warped) > grey(xa[40:]) == grey(x)
    with pytest.raises(ValueError, match="max_shift"):
        shift_pixels(x.float(), torch.Generator(), max_shift=-1)


def test_augment_digits_keeps_originals_labels_and_seed():
    x, y = load_mnist5k("test")
    x, y = x[:20], y[:20]
    xa, ya = augment_digits(x, y, copies=3, seed=1)
    assert xa.shape == (60, 1, 28, 28) and xa.dtype == torch.uint8 and torch.equal(ya, y.repeat(3))
    assert torch.equal(xa[:20], x) and not torch.equal(xa[20:40], x) and not torch.equal(xa[20:40], xa[40:])
    assert torch.equal(augment_digits(x, y, copies=3, seed=1)[0], xa)
    assert not torch.equal(augment_digits(x, y, copies=3, seed=2)[0], xa)
    assert (xa[20:].float().mean() - x.float().mean()).abs() < 10    # still digits on black, not noise
    assert torch.equal(augment_digits(x, y, copies=1)[0], x)
    with pytest.raises(ValueError, match="copies"):
        augment_digits(x, y, copies=0)
    with pytest.raises(ValueError, match="labels"):
        augment_digits(x, y[:5], copies=2)


def test_show_grid_labels_every_row_at_its_centre():
    import matplotlib; matplotlib.use("Agg")
    x, _ = load_mnist5k("test")
    import matplotlib.pyplot as plt
    ax = show_grid(x[:6], nrow=3, row_labels=["first", "second"])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["first", "second"]
    # row r's image covers pixel rows 2 + 30 r .. 29 + 30 r (2 of padding, 28 of image): centres 15.5 and 45.5
    assert list(ax.get_yticks()) == pytest.approx([15.5, 45.5], abs=1e-6)
    plain = show_grid(x[:6], nrow=3)
    assert plain.axison is False   # without labels the axes stay hidden
    plt.close(ax.figure); plt.close(plain.figure)
