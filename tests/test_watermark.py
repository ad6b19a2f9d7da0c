import math
import pytest
import torch
from argen_lit.core import make_generator
from argen_lit.data import load_mnist5k
from argen_lit.transformer import Transformer, TransformerConfig
from argen_lit.vq import Tokenizer, TokenizerConfig
from argen_lit.core import load_checkpoint, save_checkpoint
from argen_lit.watermark import (ATTACKS, attack, code_clusters, code_pairs, detect, green_lists, green_z, index_mark,
                                 pair_green_list, reencodable_tokenizer, reencode_rate, sample_marked)
from argen_lit.eval import tpr_at_fpr


@pytest.fixture(scope="module")
def prior():
    torch.manual_seed(0)
    return Transformer(TransformerConfig.smoke(vocab_size=64, max_seq_len=50, rope="2d", grid=(7, 7))).eval()


def test_same_key_same_lists_and_other_keys_differ():
    a, b = green_lists("k", 512, 0.25, 4), green_lists("k", 512, 0.25, 4)
    assert torch.equal(a, b) and a.shape == (4, 512) and (a.sum(1) == 128).all()
    assert not torch.equal(a, green_lists("other", 512, 0.25, 4))
    assert not torch.equal(a[0], a[1])   # the pool's lists differ


def test_cluster_lists_colour_whole_clusters():
    codebook = torch.cat([torch.randn(16, 4, generator=make_generator(0)) * 0.01 + c for c in (0.0, 5.0, -5.0, 10.0)])
    cl = code_clusters(codebook, 4)
    assert len(cl.unique()) == 4 and all(len(cl[i * 16:(i + 1) * 16].unique()) == 1 for i in range(4))  # the 4 blobs
    lists = green_lists("k", 64, 0.25, 3, clusters=cl)
    for lst in lists:
        assert lst.sum() == 16 and all(lst[cl == c].all() or not lst[cl == c].any() for c in range(4))
    with pytest.raises(ValueError, match="clusters"): green_lists("k", 64, 0.25, clusters=cl[:10])
    with pytest.raises(ValueError, match="k"): code_clusters(codebook, 65)


def test_unmarked_z_scores_look_standard_normal():
    ids = torch.randint(0, 512, (4000, 49), generator=make_generator(0))   # tokens with no mark
    z = green_z(ids, green_lists("k", 512, 0.25, 1))[:, 0]
    assert abs(z.mean().item()) < 0.08 and abs(z.std().item() - 1) < 0.06


def test_a_strong_bias_is_detected_and_a_wrong_key_is_not(prior):
    lists = green_lists("secret", 64, 0.25, 2)
    lab = torch.arange(200) % 10
    ids = sample_marked(prior, lab, lists, delta=6.0, generator=make_generator(0))
    z_right = green_z(ids, lists).amax(1)
    z_wrong = green_z(ids, green_lists("wrong", 64, 0.25, 2)).amax(1)
    plain = sample_marked(prior, lab, lists, delta=0.0, generator=make_generator(1))
    assert z_right.mean() > 4 and z_wrong.mean() < 1.5
    tpr, _ = tpr_at_fpr(z_right, torch.cat([green_z(plain, lists).amax(1), z_wrong]), 0.01)
    assert tpr > 0.95


def test_index_mark_pairs_and_replacements(prior):
    codebook = torch.randn(64, 8, generator=make_generator(0))
    partner = code_pairs(codebook, "k")
    assert torch.equal(partner[partner], torch.arange(64)) and (partner != torch.arange(64)).all()
    green = pair_green_list(partner, "k")
    assert torch.equal(green[0], ~green[0][partner])            # exactly one green code per pair
    ids = torch.randint(0, 64, (20, 49), generator=make_generator(1))
    lab = torch.arange(20) % 10
    free, rep = index_mark(prior, ids, lab, partner, green, max_cost=float("inf"))
    assert green[0][free].all() and torch.equal(rep, ~green[0][ids])   # with no cost limit every red token flips
    none, rep0 = index_mark(prior, ids, lab, partner, green, max_cost=0.0)
    assert (rep0 <= rep).all() and torch.equal(none[~rep0], ids[~rep0])


def test_attacks_keep_shape_and_dtype():
    x, _ = load_mnist5k("test")
    tok = Tokenizer(TokenizerConfig.smoke(quantizer="ema")).eval()
    for kind in ATTACKS:
        y = attack(x[:5], kind, tok, make_generator(0))
        assert y.shape == (5, 1, 28, 28) and y.dtype == torch.uint8
    assert torch.equal(attack(x[:5], "none"), x[:5])


def test_bad_input_is_refused(prior):
    for g in (0, 1, 1.5, -0.1, True):
        with pytest.raises(ValueError, match="gamma"): green_lists("k", 64, g)
    with pytest.raises(ValueError, match="pool"): green_lists("k", 64, 0.5, 0)
    tok = Tokenizer(TokenizerConfig.smoke(quantizer="ema")).eval()
    lists = green_lists("k", tok.n_codes, 0.5)
    for empty in (torch.zeros(0, 1, 28, 28, dtype=torch.uint8), torch.zeros(2, 1, 28, 0, dtype=torch.uint8)):
        with pytest.raises(ValueError, match="images"): detect(tok, empty, lists)
    with pytest.raises(ValueError, match="ids"): green_z(torch.zeros(0, 49, dtype=torch.long), lists)
    with pytest.raises(ValueError, match="delta"): sample_marked(prior, torch.arange(2), green_lists("k", 64), -1.0)
    with pytest.raises(ValueError, match="lists"): sample_marked(prior, torch.arange(2), green_lists("k", 32), 1.0)
    with pytest.raises(ValueError, match="unmarked"): tpr_at_fpr(torch.ones(5), torch.zeros(50), 0.01)
    with pytest.raises(ValueError, match="kind"): attack(torch.zeros(1, 1, 28, 28, dtype=torch.uint8), "rotate")
    with pytest.raises(ValueError, match="tokenizer"): attack(torch.zeros(1, 1, 28, 28, dtype=torch.uint8), "regen")
    with pytest.raises(ValueError, match="max_cost"):
        index_mark(prior, torch.zeros(1, 49, dtype=torch.long), torch.zeros(1, dtype=torch.long), torch.arange(64), green_lists("k", 64), -1)
    assert math.isfinite(green_z(torch.zeros(1, 49, dtype=torch.long), lists)[0, 0].item())


def test_reencodable_tokenizer_reads_back_its_own_tokens(tmp_path):
    torch.manual_seed(0)
    tok = Tokenizer(TokenizerConfig.smoke(quantizer="ema", n_codes=16)).eval()
    before = {k: v.clone() for k, v in tok.state_dict().items()}
    maps = torch.randint(0, 16, (64, 7, 7), generator=make_generator(0))
    rate0 = reencode_rate(tok, maps)
    new, losses = reencodable_tokenizer(tok, maps, steps=150, batch_size=32, fidelity=0.01, lr=3e-3)
    rate1 = reencode_rate(new, maps)
    assert len(losses) == 150 and rate0 < 0.2 and rate1 > rate0 + 0.5, (rate0, rate1)
    assert all(torch.equal(v, tok.state_dict()[k]) for k, v in before.items())     # the original is untouched
    assert torch.equal(new.quantizer.embed, tok.quantizer.embed)                   # same codebook: the prior still fits
    save_checkpoint(new, tmp_path / "wm_tok", new.config)
    back = load_checkpoint(Tokenizer(new.config), tmp_path / "wm_tok").eval()
    assert torch.equal(back.encode(new.decode(maps)), new.encode(new.decode(maps)))


def test_reencodable_tokenizer_refuses_bad_input():
    tok = Tokenizer(TokenizerConfig.smoke(quantizer="ema", n_codes=16)).eval()
    maps = torch.zeros(4, 7, 7, dtype=torch.long)
    for kw, name in (({"steps": 0}, "steps"), ({"steps": 1.5}, "steps"), ({"fidelity": -1.0}, "fidelity"),
                     ({"substitute": 1.5}, "substitute")):
        with pytest.raises(ValueError, match=name): reencodable_tokenizer(tok, maps, **kw)
    with pytest.raises(ValueError, match="ids"): reencodable_tokenizer(tok, torch.zeros(4, 6, 7, dtype=torch.long), steps=1)
    with pytest.raises(ValueError, match="ids"): reencodable_tokenizer(tok, torch.zeros(0, 7, 7, dtype=torch.long), steps=1)
    with pytest.raises(ValueError, match="ids"): reencodable_tokenizer(tok, maps + 16, steps=1)
