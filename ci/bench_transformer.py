"""Training throughput of the shared transformer beside a plain PyTorch decoder of the same size, in one run.

Reference size (the GPU target): d=256, 8 layers, 8 heads, 197 tokens, batch 256, bf16 autocast on CUDA.
Both models train with AdamW on random tokens; measurements alternate between the two models so that
machine noise hits both alike, and the median of the rounds is reported with the ratio.

    python ci/bench_transformer.py                 # CPU-sized batch and rounds (prints the ratio)
    python ci/bench_transformer.py --batch 256 --compile   # the GPU reference run
"""
import argparse, json, statistics, sys, time
from pathlib import Path
import torch
import torch.nn.functional as F
from torch import nn
from argen_lit.core import autocast, default_device, n_params
from argen_lit.transformer import Transformer, TransformerConfig


class PlainDecoder(nn.Module):
    "A textbook decoder from torch.nn: learned positions, LayerNorm, GELU MLP (4d), causal nn.TransformerEncoder."
    def __init__(self, vocab, d, layers, heads, seq_len):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Parameter(torch.zeros(seq_len, d))
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, activation="gelu", batch_first=True, norm_first=True, bias=False)
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm, self.head = nn.LayerNorm(d, bias=False), nn.Linear(d, vocab, bias=False)
    def forward(self, x):
        T = x.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=x.device)
        return self.head(self.norm(self.body(self.tok(x) + self.pos[:T], mask=mask, is_causal=True)))


def make_step(model, forward, device):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    def step(x, y):
        with autocast(device):
            logits = forward(x)
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        return loss
    return step


def tokens_per_second(step, x, y, steps, device):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync(); t0 = time.perf_counter()
    for _ in range(steps): step(x, y)
    sync()
    return steps * x.numel() / (time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d", type=int, default=256); p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8); p.add_argument("--seq", type=int, default=197)
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--batch", type=int, default=None, help="default: 256 on CUDA, 8 on CPU")
    p.add_argument("--steps", type=int, default=None, help="timed steps per round (default: 20 CUDA, 3 CPU)")
    p.add_argument("--rounds", type=int, default=3); p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default=None); p.add_argument("--out", default="runs/bench/transformer.json")
    a = p.parse_args(argv)
    device = default_device(a.device)
    cuda = device.type == "cuda"
    batch, steps = a.batch or (256 if cuda else 8), a.steps or (20 if cuda else 3)
    if cuda: torch.backends.cuda.matmul.allow_tf32 = True

    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=a.vocab, n_classes=10, d_model=a.d, n_layers=a.layers, n_heads=a.heads,
                            max_seq_len=a.seq, rope="1d", label_dropout=0.1)
    shared = Transformer(cfg).to(device)
    plain = PlainDecoder(a.vocab, a.d, a.layers, a.heads, a.seq).to(device)
    x = torch.randint(0, a.vocab, (batch, a.seq), device=device)
    labels = torch.randint(0, 10, (batch,), device=device)
    fwd_shared = lambda inp: shared(inp[:, :-1], labels)  # class token + seq-1 tokens = seq positions
    fwd_plain = plain
    if a.compile: fwd_shared, fwd_plain = torch.compile(fwd_shared), torch.compile(fwd_plain)
    runs = {"shared": make_step(shared, fwd_shared, device), "plain": make_step(plain, fwd_plain, device)}
    for name, step in runs.items():  # warm-up (and compilation)
        for _ in range(3 if a.compile else 1): step(x, x)
    rates = {k: [] for k in runs}
    for _ in range(a.rounds):
        for name, step in runs.items(): rates[name].append(tokens_per_second(step, x, x, steps, device))
    med = {k: statistics.median(v) for k, v in rates.items()}
    result = {"device": str(device) + (f" ({torch.cuda.get_device_name()})" if cuda else f" ({torch.get_num_threads()} threads)"),
              "torch": torch.__version__, "d": a.d, "layers": a.layers, "heads": a.heads, "seq": a.seq, "batch": batch,
              "vocab": a.vocab, "compile": a.compile, "bf16": cuda,
              "params_shared": n_params(shared), "params_plain": n_params(plain),
              "tokens_per_s_shared": med["shared"], "tokens_per_s_plain": med["plain"],
              "ratio_shared_over_plain": med["shared"] / med["plain"]}
    print(f"device {result['device']}, torch {torch.__version__}, d={a.d} L={a.layers} H={a.heads} T={a.seq} B={batch}"
          f"{' compiled' if a.compile else ''}{' bf16' if cuda else ' fp32'}")
    print("| model | params | train tokens/s (median of %d rounds) |" % a.rounds)
    print("|---|---:|---:|")
    print(f"| shared Transformer | {result['params_shared']:,} | {med['shared']:,.0f} |")
    print(f"| plain nn.TransformerEncoder | {result['params_plain']:,} | {med['plain']:,.0f} |")
    print(f"ratio shared / plain: {result['ratio_shared_over_plain']:.2f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
