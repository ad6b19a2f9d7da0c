import os
os.environ.setdefault("TQDM_DISABLE", "1")  # keep test logs short
import pytest
import torch
from argen_lit.data import load_mnist5k
from argen_lit.next_scale import MultiScaleConfig, MultiScaleTokenizer
from argen_lit.vq import train_tokenizer


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA device; `pytest -m cuda` runs only these (ci/gpu_check.py runs them)")


@pytest.fixture(scope="module")
def ms_smoke():
    """A smoke multi-scale tokenizer trained 5 steps from seed 0 on 256 test digits, and 6 digits with labels; built
    once per module, so a module's prior drawn right after it gets the same weights in every run."""
    torch.manual_seed(0)
    x, y = load_mnist5k("test")
    tok = MultiScaleTokenizer(MultiScaleConfig.smoke())
    train_tokenizer(tok, x[:256], steps=5)
    return tok.eval(), x[:6], y[:6]


@pytest.fixture
def entry_round_trip(tmp_path):
    """A check for a recipe entry `fit(budget, data, run, device)`: trained at the smoke budget into tmp_path, then
    loaded back by a second call, both draw the same uint8 digits from one seed. Returns (first, again, data)."""
    from argen_lit.core import make_generator
    from argen_lit.recipes import get_budget, load_data
    def check(fit):
        b = get_budget("smoke")
        data = load_data(b)
        first, again = fit(b, data, tmp_path, "cpu"), fit(b, data, tmp_path, "cpu")   # the second loads, not trains
        labels = torch.arange(4)
        a = first.sample(labels, make_generator(0))
        assert a.shape == (4, 1, 28, 28) and a.dtype == torch.uint8 and torch.equal(a, again.sample(labels, make_generator(0)))
        return first, again, data
    return check
