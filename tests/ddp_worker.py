"""A deterministic toy trained by the course's loop, as one process (`python tests/ddp_worker.py OUT`) or as N under
torchrun (`torchrun --nproc-per-node N tests/ddp_worker.py OUT`): every rank writes its logged losses and its final
weights to OUT, so tests/test_distributed.py can compare N processes with one on the same global batches."""
import json, sys
from pathlib import Path
import torch
from torch import nn
from safetensors.torch import save_file
from argen_lit.core import distributed, rank_and_world, train_loop


def batches():
    "Global batches of 8 rows from a seeded generator: the same on every rank."
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 3, generator=g)
    while True:
        x = torch.randn(8, 6, generator=g)
        yield x, torch.tanh(x @ w)


if __name__ == "__main__":
    out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # the same kernels (and rounding) in one process as in two
    with distributed("cpu"):
        rank, world = rank_and_world()
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
        model.register_parameter("unused", nn.Parameter(torch.zeros(2)))  # a parameter no step uses, as next-scale's token table: DDP must not wait for it
        loss = lambda m, b: (m(b[0]) - b[1]).pow(2).mean()
        logged = train_loop(model, batches(), loss, 30, 3e-2, clip=0.5, desc="toy")
        (out / f"losses{rank}.json").write_text(json.dumps({"world": world, "losses": logged}))
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"weights{rank}.safetensors"))
