"""Training speed of every leaderboard model at the quick budget, measured side by side in one run.

For each workload (a tokenizer and the priors the leaderboard trains) it times the same training steps under:
fp32 with the default threads (the baseline), fp32 on one thread, bf16 autocast, torch.compile, and both. It prints
seconds per step and the ratio to the baseline; compile time is reported apart. Also measured: one training step of
the byte LM on padded batches vs length-bucketed ones (sequences sorted by length into batches, each batch cut to its
longest sequence). Usage: `python ci/bench_training.py [--steps 12] [--only vq_prior,pixels]`.
"""
import argparse, contextlib, time
import torch
from argen_lit.codec import BYTE_VOCAB, PAD, jpeg_scans, scans_to_tokens
from argen_lit.flow_heads import FlowPrior, FlowPriorConfig, train_flow_prior
from argen_lit.masked import train_masked
from argen_lit.next_scale import MultiScaleConfig, MultiScaleTokenizer, NextScalePrior
from argen_lit.pixels import GatedPixelCNN, PixelCNNConfig, train_pixelcnn
from argen_lit.recipes import get_budget, load_data, prior_config
from argen_lit.transformer import Transformer, train_next_token
from argen_lit.vq import Tokenizer, TokenizerConfig, train_tokenizer


def workloads(b, data):
    "name -> (build, train(model, steps)): the quick budget's models and their real training functions."
    g = torch.Generator().manual_seed(0)
    n = len(data.yaug)
    codes = torch.randint(0, 512, (n, 49), generator=g)  # token values do not change the cost of a step
    latents = torch.randn(n, 49, 4, generator=g)
    ms = MultiScaleTokenizer(MultiScaleConfig(channels=b.tok_channels)).eval()
    with torch.no_grad(): ms_seq = ms.encode(data.xaug[:2000])
    ms_lab = data.yaug[:2000]
    scans = jpeg_scans(data.xaug[:2000], 25)
    max_len = max(len(s) for s in scans) + 16
    byte_ids = scans_to_tokens(scans, max_len)
    flow_cfg = FlowPriorConfig(backbone=prior_config(b, 0).to_dict(), token_dim=4, head="flow", head_width=b.head_width,
                               head_depth=2, noise_draws=4)
    kw = dict(batch_size=b.batch, lr=2e-3, desc="bench")
    return {
        "vq_tokenizer": (lambda: Tokenizer(TokenizerConfig(quantizer="ema", channels=b.tok_channels)),
                         lambda m, s: train_tokenizer(m, data.xtr, steps=s)),
        "vq_prior": (lambda: Transformer(prior_config(b, 512)),
                     lambda m, s: train_next_token(m, codes, data.yaug, steps=s, **kw)),
        "masked_prior": (lambda: Transformer(prior_config(b, 513, abs_pos=True)),
                         lambda m, s: train_masked(m, codes, data.yaug, steps=s, **kw)),
        "next_scale_prior": (lambda: NextScalePrior(prior_config(b, ms.n_codes, ms_seq.shape[1], abs_pos=True), ms.quantizer),
                             lambda m, s: train_next_token(m, ms_seq, ms_lab, steps=s, **kw)),
        "flow_prior": (lambda: FlowPrior(flow_cfg), lambda m, s: train_flow_prior(m, latents, data.yaug, steps=s, **kw)),
        "pixels": (lambda: GatedPixelCNN(PixelCNNConfig(channels=b.width // 4, n_layers=2 * b.depth, head_hidden=b.width // 2)),
                   lambda m, s: train_pixelcnn(m, data.xaug, data.yaug, steps=s, batch_size=b.batch)),
        "bytes": (lambda: Transformer(prior_config(b, BYTE_VOCAB, max_len + 2, rope="1d", grid=())),
                  lambda m, s: train_next_token(m, byte_ids, data.yaug[:2000], steps=s, batch_size=b.batch // 2, lr=2e-3,
                                                pad_token=PAD, desc="bench")),
    }, byte_ids


COMPILED = {"FlowPrior": ("loss",), "GatedPixelCNN": ("nll",)}

VARIANTS = {  # name -> (threads, bf16, compile)
    "fp32": (None, False, False), "fp32 1 thread": (1, False, False), "bf16 autocast": (None, True, False),
    "compile": (None, False, True), "compile + bf16": (None, True, True),
}


def time_variant(build, train, steps, threads, bf16, compiled):
    torch.manual_seed(0)
    saved = torch.get_num_threads()
    if threads: torch.set_num_threads(threads)
    try:
        model = build()
        if compiled:  # compile the method training calls: forward, or the model's own loss (flow: loss, PixelCNN: nll)
            for name in COMPILED.get(type(model).__name__, ("forward",)): setattr(model, name, torch.compile(getattr(model, name)))
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            t0 = time.perf_counter(); train(model, 3); warm = time.perf_counter() - t0  # compiles here
            t0 = time.perf_counter(); losses = train(model, steps); per_step = (time.perf_counter() - t0) / steps
        return per_step, warm, losses[-1]
    finally:
        torch.set_num_threads(saved)
        torch._dynamo.reset()


def bucketing(byte_ids, batch, reps=20):
    "Seconds per forward+backward of the byte LM on a random padded batch vs a batch of similar lengths cut to its longest."
    from argen_lit.core import seed_everything
    seed_everything(0)
    b = get_budget("quick")
    model = Transformer(prior_config(b, BYTE_VOCAB, byte_ids.shape[1] + 1, rope="1d", grid=()))
    labels = torch.zeros(batch, dtype=torch.long)
    lengths = (byte_ids != PAD).sum(1)
    order = lengths.argsort()
    padded = byte_ids[torch.randperm(len(byte_ids))[:batch]]
    start = torch.randint(0, len(order) - batch, (1,)).item()
    bucket = byte_ids[order[start:start + batch]]
    bucket = bucket[:, :int((bucket != PAD).sum(1).max())]
    def step(x):
        t0 = time.perf_counter()
        for _ in range(reps):
            model.zero_grad(); logits = model(x[:, :-1], labels)
            torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), x, ignore_index=PAD).backward()
        return (time.perf_counter() - t0) / reps
    step(padded)
    return step(padded), step(bucket), byte_ids.shape[1], bucket.shape[1], lengths.float().mean().item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--only", default="")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    a = ap.parse_args()
    b = get_budget("quick")
    data = load_data(b)
    loads, byte_ids = workloads(b, data)
    names = a.only.split(",") if a.only else list(loads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, quick budget, {a.steps} timed steps after 3 warm-up steps")
    print("| workload | variant | s/step | speed-up | warm-up s | last loss |\n|---|---|---|---|---|---|", flush=True)
    for name in names:
        build, train = loads[name]
        base = None
        for v in a.variants.split(","):
            try: per_step, warm, loss = time_variant(build, train, a.steps, *VARIANTS[v])
            except Exception as e:  # a variant a model does not support is a finding, not the end of the run
                print(f"| {name} | {v} | fails: {type(e).__name__}: {str(e).splitlines()[0][:90]} | | | |", flush=True); continue
            base = base or per_step
            print(f"| {name} | {v} | {per_step:.3f} | {base / per_step:.2f}x | {warm:.1f} | {loss:.3f} |", flush=True)
    if not a.only or "bytes" in names:
        p, k, lp, lk, mean = bucketing(byte_ids, b.batch // 2)
        print(f"\nbyte LM, batch {b.batch // 2}: padded to {lp} tokens {p:.3f} s/step; one length bucket cut to {lk} tokens "
              f"{k:.3f} s/step ({p / k:.2f}x); mean scan length {mean:.0f} tokens")


if __name__ == "__main__":
    main()
