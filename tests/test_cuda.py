"""The GPU path: every paradigm trains and samples on CUDA, cached decoding equals teacher forcing there, the
fixed-shape decoder's CUDA graph and compiled modes equal eager, and the harness scores the same images alike on
CUDA and CPU. Skipped, with the reason, where CUDA is absent; `ci/gpu_check.py` runs them on a GPU."""
import pytest
import torch
from argen_lit.accel import StaticDecoder
from argen_lit.core import make_generator
from argen_lit.data import load_mnist5k
from argen_lit.eval import evaluate
from argen_lit.leaderboard import PARADIGMS
from argen_lit.next_scale import MultiScaleConfig, MultiScaleTokenizer, NextScalePrior, sample_next_scale
from argen_lit.recipes import get_budget, load_data
from argen_lit.transformer import Transformer, TransformerConfig, generate

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)")]
LABELS = torch.arange(10)


@pytest.fixture(scope="module")
def data():
    return load_data(get_budget("smoke"))


@pytest.mark.parametrize("name", list(PARADIGMS))
def test_every_paradigm_trains_under_bf16_and_samples_on_cuda(name, data, tmp_path):
    c = PARADIGMS[name](get_budget("smoke"), data, tmp_path, "cuda")  # train_loop autocasts to bf16 on CUDA
    assert all(torch.isfinite(p).all() for m in c.modules for p in m.parameters())  # no NaN from a diverged step
    images = c.sample(LABELS.cuda(), make_generator(0, "cuda"))
    assert images.dtype == torch.uint8 and images.shape == (10, 1, 28, 28)  # some samplers hand back CPU images
    again = c.sample(LABELS.cuda(), make_generator(0, "cuda"))
    assert torch.equal(images, again)  # seeded sampling is reproducible on CUDA


def peaked_transformer(**kw) -> Transformer:
    torch.manual_seed(0)
    m = Transformer(TransformerConfig.smoke(vocab_size=16, **kw)).cuda().eval()
    with torch.no_grad(): m.head.weight.mul_(20)  # a peaked head, as in tests/test_accel.py
    return m


def test_cached_raster_greedy_equals_teacher_forced_argmax_on_cuda():
    m = peaked_transformer(max_seq_len=50, rope="2d", grid=(7, 7))
    y = LABELS.cuda()
    with torch.no_grad():
        ids = generate(m, 49, y, temperature=0)
        assert torch.equal(m(ids[:, :-1], y).argmax(-1), ids)


def test_cached_next_scale_greedy_equals_teacher_forced_argmax_on_cuda():
    torch.manual_seed(0)
    tok = MultiScaleTokenizer(MultiScaleConfig.smoke()).cuda().eval()
    prior = NextScalePrior(TransformerConfig.smoke(vocab_size=tok.n_codes, max_seq_len=104, rope="2d", grid=(7, 7)),
                           tok.quantizer).cuda().eval()
    y = LABELS.cuda()
    with torch.no_grad():
        ids = sample_next_scale(prior, y, temperature=0)
        assert torch.equal(prior(ids[:, :-1], y).argmax(-1), ids)


@pytest.mark.parametrize("mode", ["cuda-graph", "compile"])
def test_static_decoder_modes_equal_eager_and_are_seeded(mode):
    m = peaked_transformer(max_seq_len=50, rope="2d", grid=(7, 7))
    y = LABELS.cuda()
    with torch.no_grad():
        eager = StaticDecoder(m, 10, 49, cfg_scale=2.0, temperature=0).sample(y)
        fast = StaticDecoder(m, 10, 49, cfg_scale=2.0, temperature=0, mode=mode)
        assert torch.equal(fast.sample(y), eager) and torch.equal(fast.sample(y), eager)  # reusable
        seeded = StaticDecoder(m, 10, 49, mode=mode)
        a, b = seeded.sample(y, make_generator(3, "cuda")), seeded.sample(y, make_generator(3, "cuda"))
        assert torch.equal(a, b) and not torch.equal(a, seeded.sample(y, make_generator(4, "cuda")))


def test_the_harness_scores_the_same_images_alike_on_cuda_and_cpu():
    x, y = load_mnist5k("train")
    on_cpu = evaluate(x[:500], y[:500], device="cpu")
    tf32 = torch.backends.cuda.matmul.allow_tf32
    try:  # float32 on both devices (TF32 would round the features to 10 mantissa bits on the GPU)
        torch.backends.cuda.matmul.allow_tf32 = False
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False): on_cuda = evaluate(x[:500], y[:500], device="cuda")
    finally: torch.backends.cuda.matmul.allow_tf32 = tf32
    assert abs(on_cuda["class_accuracy"] - on_cpu["class_accuracy"]) <= 1 / 500  # at most one borderline digit
    assert on_cuda["fid"] == pytest.approx(on_cpu["fid"], rel=1e-2) and on_cuda["kid_mean"] == pytest.approx(on_cpu["kid_mean"], abs=1e-3)
    for k in ("precision", "recall"):  # k-NN counts over 500 samples: a few neighbour flips at most
        assert on_cuda[k] == pytest.approx(on_cpu[k], abs=0.01), k
