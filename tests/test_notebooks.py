"""Every course notebook runs end to end in smoke mode (papermill, SMOKE=True)."""
from pathlib import Path
import pytest
from argen_lit.cli import run_notebook

NBS = Path(__file__).resolve().parent.parent / "nbs"
NOTEBOOKS = sorted(NBS.glob("[0-9]*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_smoke(path, tmp_path):
    seconds = run_notebook(path, tmp_path / path.name, smoke=True, timeout=600)
    print(f"{path.stem}: {seconds:.1f}s smoke")
