"""Every sampler goes through the one guidance helper and `core.eval_mode`: it samples in eval mode and hands the
model back in the mode it found it (train or eval, submodule by submodule)."""
import pytest
import torch
import argen_lit.accel as A
import argen_lit.codec as C
import argen_lit.flow_heads as FH
import argen_lit.masked as M
import argen_lit.next_scale as NS
import argen_lit.pixels as P
import argen_lit.transformer as T
import argen_lit.vq as V
import argen_lit.watermark as W
from argen_lit.transformer import Guidance, cfg_logits

GRID = dict(max_seq_len=50, rope="2d", grid=(7, 7))
LABELS = torch.tensor([0, 3, 7])


def g(seed=0): return torch.Generator().manual_seed(seed)


def build():
    torch.manual_seed(0)
    tok = V.Tokenizer(V.TokenizerConfig.smoke(quantizer="ema"))
    prior = T.Transformer(T.TransformerConfig.smoke(vocab_size=tok.n_codes, dropout=0.5, **GRID))
    masked = T.Transformer(T.TransformerConfig.smoke(vocab_size=tok.n_codes + 1, dropout=0.5, abs_pos=True, **GRID))
    ms = NS.MultiScaleTokenizer(NS.MultiScaleConfig.smoke(scales=(1, 2, 3, 4, 5, 7)))
    var = NS.NextScalePrior(T.TransformerConfig.smoke(vocab_size=ms.n_codes, max_seq_len=105, rope="2d", grid=(7, 7),
                                                      abs_pos=True, dropout=0.5), ms.quantizer)
    flow = FH.FlowPrior(FH.FlowPriorConfig(backbone=T.TransformerConfig.smoke(vocab_size=0, dropout=0.5, **GRID).to_dict(),
                                           head_width=16, head_depth=1))
    px = P.GatedPixelCNN(P.PixelCNNConfig.smoke(image_size=8))
    byte_lm = T.Transformer(T.TransformerConfig.smoke(vocab_size=C.BYTE_VOCAB, max_seq_len=40, dropout=0.5))
    codes = tok.quantizer.lookup(torch.arange(tok.n_codes)).detach()
    partner = W.code_pairs(codes, "key")
    ids = torch.randint(tok.n_codes, (3, 49), generator=g(5))
    return {
        "generate": (prior, lambda: T.generate(prior, 49, LABELS, cfg_scale=2.0, generator=g())),
        "generate (no guidance)": (prior, lambda: T.generate(prior, 49, LABELS, generator=g())),
        "sample_images": (prior, lambda: V.sample_images(tok, prior, LABELS, cfg_scale=2.0, generator=g())),
        "sample_masked": (masked, lambda: M.sample_masked(masked, LABELS, steps=4, cfg_scale=3.0, generator=g())),
        "sample_next_scale": (var, lambda: NS.sample_next_scale(var, LABELS, cfg_scale=3.0, generator=g())),
        "sample_flow": (flow, lambda: FH.sample_flow(flow, LABELS, steps=2, cfg_scale=3.0, generator=g())),
        "pixels.sample": (px, lambda: P.sample(px, LABELS, cfg_scale=2.0, generator=g())),
        "pixels.sample_naive": (px, lambda: P.sample_naive(px, LABELS, cfg_scale=2.0, generator=g())),
        "sample_jpeg": (byte_lm, lambda: C.sample_jpeg(byte_lm, LABELS, 30, cfg_scale=2.0, generator=g())[0]),
        "speculative_jacobi": (prior, lambda: A.speculative_jacobi(prior, 49, LABELS, window=4, cfg_scale=2.0, generator=g())),
        "StaticDecoder": (prior, lambda: A.StaticDecoder(prior, 3, 49, cfg_scale=2.0).sample(LABELS, generator=g())),
        "index_mark": (prior, lambda: W.index_mark(prior, ids, LABELS, partner, W.pair_green_list(partner, "key"), cfg_scale=2.0)[0]),
        "sample_marked": (prior, lambda: W.sample_marked(prior, LABELS, W.green_lists("key", tok.n_codes), 2.0, generator=g(),
                                                         cfg_scale=2.0)),
    }


SAMPLERS = build()


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_sampler_leaves_the_model_in_the_mode_it_found(name):
    model, run = SAMPLERS[name]
    model.eval(); from_eval = run()
    assert not any(m.training for m in model.modules()), "an eval-mode model came back in train mode"
    model.train(); first = next(model.children()); first.eval()   # a mixed state: must come back as it was
    modes = [m.training for m in model.modules()]
    from_train = run()
    assert [m.training for m in model.modules()] == modes, "the sampler changed the model's train/eval modes"
    torch.testing.assert_close(from_train, from_eval)  # sampling itself always ran in eval mode (no dropout)
    model.eval()


def test_guidance_doubles_rows_and_mixes_back():
    labels = torch.tensor([1, 2])
    cfg = Guidance(labels, 10, 3.0)
    assert cfg.labels.tolist() == [1, 2, 10, 10]
    x = torch.arange(4.0).reshape(2, 2)
    assert torch.equal(cfg.double(x), torch.cat([x, x]))
    out = torch.randn(4, 5)
    torch.testing.assert_close(cfg.mix(out), cfg_logits(out[:2], out[2:], 3.0))
    torch.testing.assert_close(cfg.mix(out, 1.0), out[:2])  # a ramp may start unguided
    off = Guidance(labels, 10, 1.0)
    assert off.labels is labels and off.double(x) is x and off.mix(out) is out


def test_guidance_refuses_a_negative_scale():
    with pytest.raises(ValueError, match="cfg_scale"): Guidance(torch.tensor([0]), 10, -0.5)
