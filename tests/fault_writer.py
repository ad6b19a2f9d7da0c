"""A stand-in for a process that is killed while writing: run a tiny leaderboard (or overwrite a checkpoint) and die
with `os._exit` -- no `finally`, no cleanup, exactly what SIGKILL leaves -- just before write point KILL_AT.

Write points are the calls that put bytes on disk or move them into place: `os.replace`, `os.rename`, `os.fsync`,
safetensors' `save_file`, `Path.write_text`/`write_bytes`, and `os.write` (a step log's line, `write_line`). With
TORN=1 a `write_*` point writes half its data first.
Run as a script by tests/test_faults.py; imported by it for the same toy paradigm in-process.

    python tests/fault_writer.py leaderboard OUT_DIR      # KILL_AT=k (0: never), LIST_POINTS=1 prints them
    python tests/fault_writer.py overwrite CKPT_DIR
    python tests/fault_writer.py train OUT_DIR            # a resumable training run (a state every 3 steps)
"""
import os, pathlib, sys
from dataclasses import dataclass
import torch
from torch import nn


def toy_parts():
    "A one-layer 'generator' of digits with a real checkpoint, trained for a few steps by the course's loop."
    from argen_lit.core import Config, load_model, train_loop
    from argen_lit.recipes import Contender, train_or_load

    @dataclass
    class ToyConfig(Config):
        width: int = 16  # hidden units

    class Toy(nn.Module):
        def __init__(self, config: ToyConfig):
            super().__init__(); self.config = config
            self.net = nn.Sequential(nn.Linear(10 + config.width, config.width), nn.Tanh(), nn.Linear(config.width, 784))
        def forward(self, onehot, z): return self.net(torch.cat([onehot, z], 1))

    def fit_toy(b, data, run, device):
        x = data.xtr[:64].flatten(1).float() / 255; y = torch.nn.functional.one_hot(data.ytr[:64], 10).float()
        def batches():
            g = torch.Generator().manual_seed(0)
            while True: yield y, torch.randn(64, 16, generator=g), x
        loss = lambda m, batch: ((m(batch[0], batch[1]).sigmoid() - batch[2]) ** 2).mean()
        model, secs = train_or_load(run / "toy", lambda: Toy(ToyConfig()), lambda m: train_loop(m, batches(), loss, 5, 1e-2),
                                    lambda d: load_model(Toy, ToyConfig, d), device, recipe=b.recipe("steps"))
        def sample(labels, g):
            z = torch.randn(len(labels), 16, generator=g, device=labels.device)
            with torch.no_grad(): out = model(nn.functional.one_hot(labels, 10).float(), z).sigmoid()
            return (out * 255).round().to(torch.uint8).view(-1, 1, 28, 28)
        return Contender(sample, model, [model], secs, note="toy")

    def fake_evaluate(images, labels, device=None):  # deterministic numbers of the images, in a fraction of a second
        f = images.float() / 255
        return {"fid": f.mean().item(), "kid_mean": 0.01, "kid_std": 0.001, "precision": f.std().item(), "recall": 0.5,
                "class_accuracy": 0.1, "class_accuracy_low": 0.05, "class_accuracy_high": 0.2}

    return ToyConfig, Toy, fit_toy, fake_evaluate


def install_kill_points(kill_at: int, torn: bool, list_points: bool) -> None:
    import argen_lit.core as core
    count = [0]
    def reached(label):
        count[0] += 1
        if list_points: print("POINT", count[0], label, flush=True)
        return count[0] == kill_at
    def wrap(owner, name):
        orig = getattr(owner, name)
        def f(*a, **k):  # labelled with the file it writes or moves into place
            target = a[1] if name in ("replace", "rename", "save_file") else None
            if reached(f"{name} {pathlib.Path(str(target)).name}" if target is not None else name): os._exit(137)
            return orig(*a, **k)
        setattr(owner, name, f)
    def wrap_write(name):
        orig = getattr(pathlib.Path, name)
        def f(self, data, *a, **k):
            if reached(f"{name} {self.name}"):
                if torn: orig(self, data[: len(data) // 2], *a, **k)
                os._exit(137)
            return orig(self, data, *a, **k)
        setattr(pathlib.Path, name, f)
    def wrap_os_write():  # a step log's line: one os.write each, cut in half when torn
        orig = os.write
        def f(fd, data):
            if reached("write_line"):
                if torn: orig(fd, data[: len(data) // 2])
                os._exit(137)
            return orig(fd, data)
        os.write = f
    for name in ("replace", "rename", "fsync"): wrap(os, name)
    wrap_os_write()
    wrap(core, "save_file")
    for name in ("write_text", "write_bytes"): wrap_write(name)


def toy_leaderboard_patches() -> dict:
    "What `argen_lit.leaderboard` gets in place of its paradigms, data and scores, for a run of a few seconds."
    from argen_lit.recipes import Data
    _, _, fit_toy, fake_evaluate = toy_parts()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=g), torch.arange(64) % 10
    import argen_lit.eval as E
    def fake_evaluate_seeds(*a, **k):  # the real loop over seeds, each draw scored by the stand-in
        real, E.evaluate = E.evaluate, fake_evaluate
        try: return E.evaluate_seeds(*a, **k)
        finally: E.evaluate = real
    return {"PARADIGMS": {"toy": fit_toy}, "evaluate_seeds": fake_evaluate_seeds, "load_data": lambda b: Data(x, y, x, y, x, y)}


def run_toy_leaderboard(out_dir):
    import argen_lit.leaderboard as lb
    for name, value in toy_leaderboard_patches().items(): setattr(lb, name, value)
    return lb.run_leaderboard("smoke", None, out_dir, "cpu")


def overwrite_checkpoint(directory, seed: int):
    from argen_lit.core import save_checkpoint
    ToyConfig, Toy, _, _ = toy_parts()
    torch.manual_seed(seed)
    save_checkpoint(Toy(ToyConfig()), directory, meta={"seed": seed})


def train_toy(run):
    """12 steps of the toy, with noise from torch's global generator and from a generator of the loss's own, inside
    `train_or_load` (which keeps a resumable state) saving every 3 steps; returns the trained model."""
    from argen_lit.core import load_model, train_loop, train_settings
    from argen_lit.recipes import train_or_load
    ToyConfig, Toy, _, _ = toy_parts()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 784, generator=g), nn.functional.one_hot(torch.arange(64) % 10, 10).float()
    own = torch.Generator().manual_seed(5)
    def batches():
        g = torch.Generator().manual_seed(1)
        while True:
            idx = torch.randint(64, (16,), generator=g)
            yield y[idx], torch.randn(16, 16, generator=g), x[idx]
    def loss(m, b):
        noise = 0.05 * torch.randn(b[2].shape) + 0.05 * torch.randn(b[2].shape, generator=own)
        return ((m(b[0], b[1]).sigmoid() - b[2] - noise) ** 2).mean()
    fit = lambda m: train_loop(m, batches(), loss, 12, 1e-2, generators=[own])
    with train_settings(save_every=3):
        model, _ = train_or_load(pathlib.Path(run) / "toy", lambda: Toy(ToyConfig()), fit,
                                 lambda d: load_model(Toy, ToyConfig, d), "cpu", recipe={"steps": 12})
    return model


if __name__ == "__main__":
    what, target = sys.argv[1], sys.argv[2]
    if what == "overwrite": overwrite_checkpoint(target, 0)  # the previous state, written before any kill point
    install_kill_points(int(os.environ.get("KILL_AT", "0")), os.environ.get("TORN") == "1", bool(os.environ.get("LIST_POINTS")))
    if what == "leaderboard": run_toy_leaderboard(target)
    elif what == "train": train_toy(target)
    else: overwrite_checkpoint(target, 1)
    print("FINISHED", flush=True)
