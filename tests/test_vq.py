import pytest
import torch
from argen_lit.core import make_generator, save_checkpoint
from argen_lit.data import load_mnist5k
from argen_lit.transformer import Transformer, TransformerConfig, load_transformer, train_next_token
from argen_lit.vq import (FSQ, LFQ, QUANTIZERS, EMAVectorQuantizer, Tokenizer, TokenizerConfig,
                          codebook_stats, evaluate_tokenizer, load_tokenizer, make_quantizer, sample_images,
                          train_tokenizer)


def latents(dim, seed=0, scale=1.0):
    return torch.randn(3, dim, 4, 5, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("kind", QUANTIZERS)
def test_indices_codes_indices_round_trip(kind):
    torch.manual_seed(0)
    q = make_quantizer(kind, n_codes=64, code_dim=4, fsq_levels=(4, 4, 4)).eval()
    out = q(latents(q.dim, scale=2.0))
    assert out.indices.shape == (3, 4, 5) and out.z_q.shape == (3, q.dim, 4, 5)
    assert torch.allclose(q.codes(out.indices), out.z_q, atol=1e-6)   # the forward output is the code of its index
    assert torch.equal(q.indices_of(q.codes(out.indices)), out.indices)
    every = torch.arange(q.n_codes).reshape(1, 1, -1)
    assert torch.equal(q.indices_of(q.codes(every)), every)             # every code maps back to its own id


def test_fsq_index_arithmetic():
    fsq = FSQ((8, 5, 3))
    assert fsq.n_codes == 120 and fsq.dim == 3
    levels = fsq.codes(torch.arange(120).reshape(1, 1, -1))[0, :, 0].T * fsq.half_width  # (120, 3) integer levels
    assert torch.equal(levels[0], torch.tensor([-4.0, -2.0, -1.0]))
    assert torch.equal(levels[1], torch.tensor([-3.0, -2.0, -1.0]))       # first dim is the fastest digit
    assert torch.equal(levels[8], torch.tensor([-4.0, -1.0, -1.0]))       # radix 8 carries into dim 2
    assert torch.equal(levels[119], torch.tensor([3.0, 2.0, 1.0]))
    out = fsq(latents(3, scale=10.0))                                     # extreme inputs stay inside the grid
    assert out.indices.min() >= 0 and out.indices.max() < 120 and out.z_q.abs().max() <= 1
    assert out.loss.item() == 0.0


def test_lfq_index_arithmetic_and_entropy_loss():
    lfq = LFQ(bits=3)
    codes = lfq.codes(torch.tensor([[[0, 1, 6]]]))[0, :, 0].T
    assert codes.tolist() == [[-1, -1, -1], [1, -1, -1], [-1, 1, 1]]    # index = sum_i [q_i > 0] 2^i
    z = latents(3).requires_grad_()
    lfq.train(); out = lfq(z)
    out.loss.backward()
    assert z.grad.abs().sum() > 0
    collapsed = lfq(torch.ones(3, 3, 4, 5) * 0.5).loss                    # one code for everything: low batch entropy
    spread = lfq(latents(3, seed=1)).loss
    assert collapsed > spread


@pytest.mark.parametrize("kind", QUANTIZERS)
def test_straight_through_gradients_reach_the_encoder(kind):
    torch.manual_seed(0)
    tok = Tokenizer(TokenizerConfig.smoke(quantizer=kind, n_codes=64, fsq_levels=(4, 4, 4)))
    x, _ = load_mnist5k("test")
    rec, q = tok(x[:8])
    (torch.nn.functional.mse_loss(rec, x[:8].float() / 255) + q.loss).backward()
    first = tok.encoder[0].weight.grad
    assert first is not None and first.abs().sum() > 0


def test_dead_codes_are_restarted_at_encoder_outputs():
    torch.manual_seed(0)
    ema = EMAVectorQuantizer(16, 2)
    data = torch.randn(2, 2, 6, 6) * 0.05 + 5.0          # far from every initial code
    ema.train(); ema(data)
    assert ema.restarts.item() > 0
    assert ((ema.embed - 5.0).abs().amax(1) < 0.5).sum() >= 15  # the 15 losers were restarted onto the data
    out = ema(data)
    assert out.usage > 0.5
    before = ema.restarts.clone(); ema.eval(); ema(data)
    assert torch.equal(ema.restarts, before)              # no updates outside training


def test_codebook_stats():
    usage, ppl = codebook_stats(torch.tensor([0, 0, 1, 1]), 4)
    assert usage == 0.5 and abs(ppl - 2.0) < 1e-6


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    x, y = load_mnist5k("train")
    tok = Tokenizer(TokenizerConfig.smoke(quantizer="fsq", fsq_levels=(4, 4, 4)))
    train_tokenizer(tok, x[:512], steps=20)
    prior = Transformer(TransformerConfig.smoke(vocab_size=tok.n_codes, max_seq_len=50, rope="2d", grid=tok.grid))
    train_next_token(prior, tok.encode(x[:512]).flatten(1), y[:512], steps=5, batch_size=64)
    d = tmp_path_factory.mktemp("vq")
    save_checkpoint(tok, d / "tok"); save_checkpoint(prior, d / "prior")
    return tok, prior, d


def test_tokenizer_trains_and_evaluates(trained):
    tok = trained[0]
    x, _ = load_mnist5k("test")
    stats, recs = evaluate_tokenizer(tok, x[:200])
    assert recs.dtype == torch.uint8 and recs.shape == (200, 1, 28, 28)
    assert 0 < stats["usage_pct"] <= 100 and 1 <= stats["perplexity"] <= tok.n_codes and stats["psnr"] > 10
    assert torch.equal(tok.decode(tok.encode(x[:5])), recs[:5])


def test_checkpoints_reload_to_identical_samples(trained):
    tok, prior, d = trained
    labels = torch.tensor([0, 5, 9, 10])
    a = sample_images(tok, prior, labels, cfg_scale=2.0, top_k=20, generator=make_generator(4))
    b = sample_images(load_tokenizer(d / "tok"), load_transformer(d / "prior"), labels, cfg_scale=2.0, top_k=20,
                      generator=make_generator(4))
    assert a.dtype == torch.uint8 and a.shape == (4, 1, 28, 28) and torch.equal(a, b)
    c = sample_images(tok, prior, labels, cfg_scale=2.0, top_k=20, generator=make_generator(5))
    assert not torch.equal(a, c)


def test_bad_input_gets_clear_errors(trained):
    tok, prior, _ = trained
    with pytest.raises(ValueError, match="indices"):
        tok.decode(torch.full((1, 7, 7), tok.n_codes))               # token id outside the codebook
    with pytest.raises(ValueError, match="indices"):
        tok.decode(torch.zeros(1, 6, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        sample_images(tok, prior, torch.tensor([11]))                # class out of range (10 is the null class)
    with pytest.raises(ValueError, match="cfg_scale"):
        sample_images(tok, prior, torch.tensor([1]), cfg_scale=-1.0)  # negative guidance
    with pytest.raises(TypeError, match="images"):
        tok(torch.zeros(2, 1, 28, 28))                               # floats, not uint8 pixels
    with pytest.raises(ValueError, match="images"):
        tok(torch.zeros(2, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="z"):
        tok.quantizer(torch.zeros(2, 5, 7, 7))
    with pytest.raises(ValueError, match="kind"):
        make_quantizer("pq")
    with pytest.raises(ValueError, match="n_codes"):
        make_quantizer("lfq", n_codes=500)
    with pytest.raises(ValueError, match="levels"):
        FSQ((1, 4))
    small = Transformer(TransformerConfig.smoke(vocab_size=7, max_seq_len=50))
    with pytest.raises(ValueError, match="vocab_size"):
        sample_images(tok, small, torch.tensor([1]))
