import os
os.environ.setdefault("TQDM_DISABLE", "1")  # keep test logs short


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA device; `pytest -m cuda` runs only these (ci/gpu_check.py runs them)")
