"""Decoding speed of the shared transformer, every accelerated sampler side by side, measured in one run.

Reference size (the GPU target): d=256, 8 layers, 8 heads, 197 tokens (class + 196), batch 64, bf16 on CUDA.
Weights are random: speed does not depend on them. The speculative samplers' acceptance does, so they are
measured on a trained prior: with --prior runs/accel/full (written by `argen-lit course --full 70`), a second table
puts plain sampling, speculative Jacobi decoding and grouped speculative decoding side by side on that prior.

Rows: no cache, growing cache (the plain loop: concatenation + torch.multinomial), the static-cache loop of
`generate`, and argen_lit.accel.StaticDecoder eager, compiled (--compile) and CUDA-graph captured (CUDA only),
each as milliseconds per token step and images/s, plus the speed-up over the plain loop.

    python ci/bench_accel.py                      # CPU-sized defaults (batch 8, 64 tokens)
    python ci/bench_accel.py --compile            # add torch.compile (about a minute to compile on CPU)
    python ci/bench_accel.py --batch 64 --tokens 196 --compile    # the GPU reference run
    python ci/bench_accel.py --prior runs/accel/full   # add the speculative samplers on the notebook's trained prior
"""
import argparse, json, sys
from pathlib import Path
import torch
from argen_lit.accel import StaticDecoder, code_neighbours, ms_per_step, speculative_jacobi
from argen_lit.core import default_device, n_params
from argen_lit.eval import compare_speed
from argen_lit.transformer import Transformer, TransformerConfig, generate, load_transformer
from argen_lit.vq import load_tokenizer


def speculative_rows(folder, device, batch, window, cfg, rounds, group_size, gsd_window, group_gap, group_rank):
    "Plain, SJD and GSD on a trained raster prior (folder/vq_prior, folder/vq_tokenizer): images/s and passes per image."
    prior, tok = load_transformer(Path(folder) / "vq_prior", device), load_tokenizer(Path(folder) / "vq_tokenizer", device)
    group_size = group_size or tok.n_codes
    groups = code_neighbours(tok.quantizer.lookup(torch.arange(tok.n_codes, device=device)), group_size)
    lab = lambda b: torch.arange(b, device=device) % 10
    return compare_speed({
        "plain (static cache)": (lambda b: generate(prior, 49, lab(b), cfg_scale=cfg), prior),
        f"SJD window {window}": (lambda b: speculative_jacobi(prior, 49, lab(b), window=window, cfg_scale=cfg), prior),
        f"GSD window {gsd_window}, k={group_size}, gap {group_gap}, rank {group_rank}": (lambda b: speculative_jacobi(
            prior, 49, lab(b), window=gsd_window, cfg_scale=cfg, groups=groups, group_gap=group_gap, group_rank=group_rank), prior),
    }, n_images=batch, rounds=rounds)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d", type=int, default=256); p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8); p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--tokens", type=int, default=None, help="tokens per image (default: 196 on CUDA, 64 on CPU)")
    p.add_argument("--batch", type=int, default=None, help="default: 64 on CUDA, 8 on CPU")
    p.add_argument("--rounds", type=int, default=3); p.add_argument("--compile", action="store_true")
    p.add_argument("--no-cache-row", action="store_true", help="skip the (slow) no-cache row")
    p.add_argument("--prior", default=None, help="folder with vq_prior/ and vq_tokenizer/ checkpoints (nbs/70 writes runs/accel/full)")
    p.add_argument("--spec-batch", type=int, default=10); p.add_argument("--window", type=int, default=8)
    p.add_argument("--cfg", type=float, default=3.0)
    p.add_argument("--group-size", type=int, default=None, help="GSD: codebook neighbours per group (default: the whole codebook)")
    p.add_argument("--gsd-window", type=int, default=24); p.add_argument("--group-gap", type=float, default=0.15)
    p.add_argument("--group-rank", type=int, default=30, help="GSD: rank window (30: no measurable cost in nbs/70's sweep; 60 was chosen and confirmed there at 3.0x)")
    p.add_argument("--device", default=None); p.add_argument("--out", default="runs/bench/accel.json")
    a = p.parse_args(argv)
    device = default_device(a.device)
    cuda = device.type == "cuda"
    n, batch = a.tokens or (196 if cuda else 64), a.batch or (64 if cuda else 8)
    dtype = torch.bfloat16 if cuda else torch.float32
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(vocab_size=a.vocab, n_classes=10, d_model=a.d, n_layers=a.layers, n_heads=a.heads,
                                          max_seq_len=n + 1, rope="1d")).to(device, dtype).eval()
    labels = torch.arange(batch, device=device) % 10
    runs = {}
    if not a.no_cache_row: runs["no cache"] = lambda: generate(model, n, labels, cache="none")
    runs["plain loop (growing cache)"] = lambda: generate(model, n, labels, cache="growing")
    runs["generate, static cache"] = lambda: generate(model, n, labels)
    modes = ["eager"] + (["compile"] if a.compile else []) + (["cuda-graph"] if cuda else [])
    for mode in modes:
        dec = StaticDecoder(model, batch, n, mode=mode)
        runs[f"StaticDecoder {mode}"] = lambda dec=dec: dec.sample(labels)
    rows = []
    with torch.no_grad():
        for name, fn in runs.items():
            ms = ms_per_step(fn, n, a.rounds)
            rows.append({"decoder": name, "ms_per_step": ms, "images_per_s": batch / (ms * n / 1000)})
            print(f"  measured {name}", file=sys.stderr)
    ref = next(r for r in rows if r["decoder"] == "plain loop (growing cache)")["ms_per_step"]
    info = f"{torch.cuda.get_device_name() if cuda else 'CPU'}, torch {torch.__version__}, {str(dtype).split('.')[-1]}"
    print(f"decode step: d={a.d}, {a.layers} layers ({n_params(model) / 1e6:.1f}M parameters), {n + 1} positions, batch {batch}; {info}")
    print("| decoder | ms per token step | images/s | speed-up over the plain loop |\n|---|---:|---:|---:|")
    for r in rows:
        r["speedup"] = ref / r["ms_per_step"]
        print(f"| {r['decoder']} | {r['ms_per_step']:.3f} | {r['images_per_s']:.1f} | {r['speedup']:.1f}x |")
    spec = []
    if a.prior:
        with torch.no_grad(): spec = speculative_rows(a.prior, device, a.spec_batch, a.window, a.cfg, a.rounds,
                                                       a.group_size, a.gsd_window, a.group_gap, a.group_rank)
        print(f"\nspeculative samplers on the trained prior ({a.prior}), batch {a.spec_batch}, cfg {a.cfg}")
        print("| sampler | forward passes per image | images/s | speed-up |\n|---|---:|---:|---:|")
        for r in spec: print(f"| {r['sampler']} | {r['forward_passes_per_image']} | {r['images_per_s']:.1f} | {r['speedup']:.2f}x |")
    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": info, "batch": batch, "tokens": n, "rows": rows, "speculative": spec}, indent=1))
    return rows


if __name__ == "__main__":
    main()
