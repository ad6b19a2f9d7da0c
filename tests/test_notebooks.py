"""Every course notebook runs end to end in smoke mode (papermill, SMOKE=True), and every committed notebook, opened
and run as it is, runs the smoke recipe: its only executable parameters are the smoke ones."""
import ast, json
from pathlib import Path
import nbformat
import pytest
from argen_lit.cli import run_notebook
from argen_lit.exercises import count_exercises, student_copy

NBS = Path(__file__).resolve().parent.parent / "nbs"
NOTEBOOKS = sorted(NBS.glob("[0-9]*.ipynb"))


def _cells(path):
    nb = json.loads(path.read_text())
    return [(c, "".join(c["source"]) if isinstance(c["source"], list) else c["source"], c.get("metadata", {}).get("tags", []))
            for c in nb["cells"]]


def _assigned_names(source: str) -> set[str]:
    "Names bound at the top level of a code cell (magics and nbdev directives stripped)."
    lines = [l for l in source.splitlines() if not l.lstrip().startswith(("%", "!"))]
    try: tree = ast.parse("\n".join(lines))
    except SyntaxError: return set()
    return {t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_runs_the_smoke_recipe_when_opened(path):
    cells = _cells(path)
    params = [(c, s) for c, s, t in cells if c["cell_type"] == "code" and "parameters" in t]
    assert len(params) == 1, "exactly one parameters cell"
    names = _assigned_names(params[0][1])
    assert "SMOKE" in names and ast.literal_eval(ast.parse(params[0][1]).body[0].value) is True
    assert not [t for _, _, t in cells if "injected-parameters" in t], "papermill's injected cell must not be committed"
    for c, s, t in cells:  # no other code cell re-sets a parameter (SMOKE = False would start the full recipe)
        if c["cell_type"] == "code" and "parameters" not in t:
            assert not (_assigned_names(s) & names), f"a code cell re-assigns {_assigned_names(s) & names}:\n{s[:200]}"
    provenance = [s for c, s, t in cells if "run-provenance" in t]
    assert len(provenance) == 1 and "SMOKE = False" in provenance[0], "the full run's provenance stays visible"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_smoke(path, tmp_path):
    """A notebook with exercises runs as its student copy (the lesson as committed, each solution a stub): the lesson's
    cells are the same, and the stubs and failing checks must not stop the run. The teacher's solutions run in
    tests/test_exercises.py, where each section runs alone in a second."""
    nb = nbformat.read(str(path), as_version=4)
    n_ex = count_exercises(nb)
    source = path
    if n_ex:   # written beside the original, so relative paths (../runs/...) mean the same; removed afterwards
        source = path.with_name(f".{path.stem}.student.ipynb")
        nbformat.write(student_copy(nb, path.name)[0], str(source))
    try: seconds = run_notebook(source, tmp_path / path.name, smoke=True, timeout=600)
    finally:
        if source != path: source.unlink(missing_ok=True)
    print(f"{path.stem}: {seconds:.1f}s smoke" + (f" (student copy, {n_ex} exercises)" if n_ex else ""))
    out = _cells(tmp_path / path.name)
    if n_ex:   # every stub said what to write, every check said "not done yet", and the run went on to the end
        stubs = [o for c, _, t in out if "stub" in t for o in c.get("outputs", []) if o["output_type"] == "error"]
        checks = [o for c, _, t in out if "check" in t for o in c.get("outputs", []) if o["output_type"] == "error"]
        assert len(checks) == len([1 for _, _, t in out if "check" in t]) and all(o["ename"] == "ExerciseFailed" for o in checks)
        assert all("not done yet" in o["evalue"] and "Hint" in o["evalue"] for o in checks)
        assert all(o["ename"] == "NotImplementedError" for o in stubs)
        assert "nbdev_export" in out[-1][1]
    assert not [t for _, _, t in out if "injected-parameters" in t]
    assert [s for _, s, t in out if "run-provenance" in t] and "SMOKE = True" in [s for _, s, t in out if "run-provenance" in t][0]
