import subprocess, sys
from pathlib import Path
import pytest
from argen_lit.cli import find_notebooks, format_results, main


def test_find_notebooks_by_number_stem_or_name():
    allnb = find_notebooks()
    assert [p.stem for p in allnb] == sorted(p.stem for p in allnb) and allnb
    assert find_notebooks(["02"]) == find_notebooks(["02_transformer"]) == find_notebooks(["nbs/02_transformer.ipynb"])
    with pytest.raises(ValueError, match="notebook"):
        find_notebooks(["77_missing"])


def test_info_command(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "device:" in out and "MNIST-5k found (4000 train / 1000 test" in out and "test accuracy" in out


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "argen-lit"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "course" in out.stdout


def test_course_reports_failures_with_nonzero_exit(tmp_path, monkeypatch):
    bad = tmp_path / "nbs"; bad.mkdir()
    (bad / "00_broken.ipynb").write_text('{"cells": [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, '
                                         '"source": "SMOKE = True", "outputs": [], "execution_count": null}, '
                                         '{"cell_type": "code", "metadata": {}, "source": "1/0", "outputs": [], '
                                         '"execution_count": null}], "metadata": {}, "nbformat": 4, "nbformat_minor": 4}')
    monkeypatch.setattr("argen_lit.cli.course_dir", lambda: bad)
    assert main(["course", "--out-dir", str(tmp_path / "out")]) == 1
    table = format_results([{"notebook": "a", "mode": "smoke", "seconds": 1.0, "ok": True, "error": ""}])
    assert "| a | smoke | 1.0 | ok |" in table


def test_a_failed_in_place_run_leaves_the_source_untouched(tmp_path, monkeypatch):
    nbs = tmp_path / "nbs"; nbs.mkdir()
    src = ('{"cells": [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "SMOKE = True", "outputs": [], '
           '"execution_count": null}, {"cell_type": "code", "metadata": {}, "source": "1/0", "outputs": [], '
           '"execution_count": null}], "metadata": {}, "nbformat": 4, "nbformat_minor": 4}')
    (nbs / "00_broken.ipynb").write_text(src)
    monkeypatch.setattr("argen_lit.cli.course_dir", lambda: nbs)
    assert main(["course", "--in-place"]) == 1
    assert (nbs / "00_broken.ipynb").read_text() == src and sorted(p.name for p in nbs.iterdir()) == ["00_broken.ipynb"]


def test_a_full_run_allows_its_cells_longer(tmp_path, monkeypatch):
    "A full recipe's training cell may train several models: its cells get CELL_TIMEOUT['full'], smoke cells less."
    import argen_lit.cli as cli
    seen = []
    monkeypatch.setattr(cli, "run_notebook", lambda p, out, smoke, timeout: seen.append((smoke, timeout)) or 1.0)
    assert main(["course", "00", "--out-dir", str(tmp_path)]) == 0 and main(["course", "00", "--full", "--out-dir", str(tmp_path)]) == 0
    assert main(["course", "00", "--timeout", "5", "--out-dir", str(tmp_path)]) == 0
    assert seen == [(True, cli.CELL_TIMEOUT["smoke"]), (False, cli.CELL_TIMEOUT["full"]), (True, 5)]
    assert cli.CELL_TIMEOUT["full"] > cli.CELL_TIMEOUT["smoke"]
    with pytest.raises(ValueError, match="timeout"): cli.run_course(["00"], timeout=0)


def test_a_cell_tagged_raises_exception_may_fail_and_the_run_goes_on(tmp_path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook
    from argen_lit.cli import run_notebook
    cells = [new_code_cell("SMOKE = True", metadata={"tags": ["parameters"]}),
             new_code_cell("raise NotImplementedError('an exercise not written yet')", metadata={"tags": ["raises-exception"]}),
             new_code_cell("print('went on')")]
    nbformat.write(new_notebook(cells=cells), str(tmp_path / "ok.ipynb"))
    run_notebook(tmp_path / "ok.ipynb", tmp_path / "out" / "ok.ipynb")
    out = nbformat.read(str(tmp_path / "out" / "ok.ipynb"), as_version=4)
    assert any("went on" in o.get("text", "") for o in out.cells[-1].outputs)
    assert not any("papermill-error-cell-tag" in c.metadata.get("tags", []) for c in out.cells)   # no failure banners
    assert len(out.cells) == 4                        # the three cells and the run's provenance line
    cells[1].metadata["tags"] = []                                                 # the same error, not expected
    nbformat.write(new_notebook(cells=cells), str(tmp_path / "bad.ipynb"))
    with pytest.raises(Exception, match="NotImplementedError"): run_notebook(tmp_path / "bad.ipynb", tmp_path / "out" / "bad.ipynb")
