"""Exercises: every course notebook has 2-4, each section runs alone, every check passes on the notebook's own
solution and fails on the student's stub with a helpful message; student copies and bad input."""
import os
from pathlib import Path
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from argen_lit.cli import main
from argen_lit.exercises import (BEGIN, END, ExerciseFailed, check_function, check_value, count_exercises, exercise_section,
                                 run_exercises, student_copy, stub_source, tags, write_exercises)

NBS = Path(__file__).resolve().parent.parent / "nbs"
COURSE = [p for p in sorted(NBS.glob("[0-9]*.ipynb")) if int(p.stem[:2]) < 90]


def read(p): return nbformat.read(str(p), as_version=4)


@pytest.mark.parametrize("path", COURSE, ids=[p.stem for p in COURSE])
def test_each_course_notebook_ends_with_two_to_four_exercises(path):
    nb = read(path)
    assert 2 <= count_exercises(nb) <= 4
    section = exercise_section(nb)
    solutions = [c for c in section if "solution" in tags(c)]
    assert len(solutions) >= count_exercises(nb) and all(BEGIN in c.source and END in c.source and "Hint:" in c.source for c in solutions)
    assert "check" in tags(section[-1]) or section[-1].cell_type == "markdown"
    assert section[0].cell_type == "code" and "import" in section[0].source           # the section imports what it needs


@pytest.mark.parametrize("path", COURSE, ids=[p.stem for p in COURSE])
def test_checks_pass_on_the_solutions_and_fail_helpfully_on_the_stubs(path, capsys):
    nb = read(path)
    teacher = run_exercises(nb, path.name)
    assert teacher and all(r["passed"] for r in teacher), teacher
    assert capsys.readouterr().out.count("correct:") == len(teacher)
    student = run_exercises(student_copy(nb, path.name)[0], path.name)
    assert len(student) == len(teacher) and not any(r["passed"] for r in student)
    assert all(r["message"].startswith("not done yet: write this part. Hint: ") for r in student), student


def test_a_wrong_answer_names_the_case_and_the_hint():
    import torch
    with pytest.raises(ExerciseFailed, match=r"case 1: expected .*\nhint: normalise each row"):
        check_function(lambda x: x.exp() / x.exp().sum(), lambda x: x.softmax(-1), [(torch.zeros(1, 3),), (torch.zeros(2, 3),)],
                       hint="normalise each row")
    with pytest.raises(ExerciseFailed, match="case 0 raised ZeroDivisionError"): check_function(lambda: 1 / 0, lambda: 1, [()])
    with pytest.raises(ExerciseFailed, match="expected your function"): check_function(None, len, [("ab",)])
    with pytest.raises(ExerciseFailed, match=r"in \[1, 2\], got 3"): check_value(lambda: 3, 1, 2, "x")
    x = torch.tensor([[1.0, 2.0, 3.0]])     # an answer that zeroes its input must not fool the reference
    with pytest.raises(ExerciseFailed, match="case 0"): check_function(lambda t: t.zero_().softmax(-1), lambda t: t.softmax(-1), [(x,)])
    assert torch.equal(x, torch.tensor([[1.0, 2.0, 3.0]]))
    for got, want in [(torch.tensor([1 + 5j]), torch.tensor([1 + 0j])), (torch.tensor([1.0, 0.0]), torch.tensor([True, False])),
                      (torch.tensor([3, 3]), 3), (True, 1), ({"a": torch.ones(2)}, {"a": torch.zeros(2)})]:
        with pytest.raises(ExerciseFailed, match="case 0: expected"): check_function(lambda: got, lambda: want, [()])
    import numpy as np
    check_function(lambda: np.arange(3), lambda: np.arange(3), [()])
    check_value(lambda: 1.5, 1, 2, "x")                                          # inside: no exception


def test_stubs_keep_everything_outside_the_markers():
    src = "def f(x):\n    # Hint: double it\n    ### BEGIN SOLUTION\n    y = 2 * x\n    ### END SOLUTION\n    return y\nprint(f(2))"
    stub = stub_source(src)
    assert stub.splitlines() == ["def f(x):", "    # Hint: double it", "    # your code here",
                                 "    raise NotImplementedError('write this part. Hint: double it')", "    return y", "print(f(2))"]
    with pytest.raises(ValueError, match="needs a `### BEGIN SOLUTION`"): stub_source("x = 1", "nb: cell 3")
    with pytest.raises(ValueError, match="never closed"): stub_source("### BEGIN SOLUTION\nx = 1")
    with pytest.raises(ValueError, match="never opened"): stub_source("x = 1\n### END SOLUTION")
    with pytest.raises(ValueError, match="inside another"): stub_source("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION")
    leak = stub_source("def f():\n    # Hint: a number\n    ### BEGIN SOLUTION\n    return 1  # hint: the answer is 1\n    ### END SOLUTION")
    assert "answer is 1" not in leak and "Hint: a number" in leak                  # the hint is read outside the block
    flush = stub_source("def f(x):\n    ### BEGIN SOLUTION\n        y = x\n        return y\n    ### END SOLUTION")
    compile(flush, "stub", "exec")                                                 # indented like the block's code
    assert "raise" in stub_source("x = 1\n### BEGIN SOLUTION\n### END SOLUTION")    # an empty block is a block
    with pytest.raises(ValueError, match="does not compile"): stub_source("if x:\n### BEGIN SOLUTION\n### END SOLUTION\nelse: pass")


def tiny_course(folder: Path) -> Path:
    folder.mkdir(parents=True)
    nb = new_notebook(cells=[new_markdown_cell("# One"), new_markdown_cell("## Exercises"), new_code_cell("from argen_lit.exercises import check_value"),
                             new_markdown_cell("### Exercise 1: two"),
                             new_code_cell("def two():\n    # Hint: 1 + 1\n    ### BEGIN SOLUTION\n    return 2\n    ### END SOLUTION",
                                           metadata={"tags": ["solution"]}),
                             new_code_cell("check_value(two, 2, 2, 'two')", metadata={"tags": ["check"]}),
                             new_code_cell("import nbdev; nbdev.nbdev_export()")])
    nbformat.write(nb, str(folder / "01_one.ipynb"))
    nbformat.write(new_notebook(cells=[new_markdown_cell("# No exercises")]), str(folder / "02_two.ipynb"))
    return folder


def test_student_copies_and_bad_input(tmp_path):
    course = tiny_course(tmp_path / "nbs")
    records = write_exercises(tmp_path / "out", nbs=course)
    assert records == [{"notebook": "01_one", "exercises": 1, "stubs": 1}]
    copy = read(tmp_path / "out" / "01_one.ipynb")
    assert [tags(c) for c in copy.cells if tags(c)] == [["stub", "raises-exception"], ["check", "raises-exception"]]
    assert "return 2" not in copy.cells[4].source and "return 2" in read(course / "01_one.ipynb").cells[4].source
    assert write_exercises(tmp_path / "out", nbs=course) == records                 # its own folder: rewritten
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"): write_exercises(tmp_path / "file", nbs=course)
    (tmp_path / "mine").mkdir(); (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="not empty.*--force"): write_exercises(tmp_path / "mine", nbs=course)
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]
    assert write_exercises(tmp_path / "mine", nbs=course, force=True) == records
    (tmp_path / "none").mkdir(); nbformat.write(new_notebook(cells=[]), str(tmp_path / "none" / "01_x.ipynb"))
    with pytest.raises(FileNotFoundError, match="no notebook there has"): write_exercises(tmp_path / "o2", nbs=tmp_path / "none")
    bad = read(course / "01_one.ipynb"); bad.cells[4].source = "def two(): return 2"   # tagged solution, no markers
    with pytest.raises(ValueError, match="01_one.ipynb: cell 4: a cell tagged `solution` needs"): student_copy(bad, "01_one.ipynb")
    assert main(["exercises", "--out", str(tmp_path / "file")]) == 2
    both = read(course / "01_one.ipynb"); both.cells[4].metadata["tags"] = ["solution", "check", "raises-exception"]
    assert tags(student_copy(both)[0].cells[4]) == ["check", "raises-exception", "stub"]    # stubbed, tagged once
    (tmp_path / "corrupt").mkdir(); (tmp_path / "corrupt" / "01_x.ipynb").write_text("{not json")
    with pytest.raises(ValueError, match="01_x.ipynb: not a readable notebook"): write_exercises(tmp_path / "o3", nbs=tmp_path / "corrupt")


def test_the_command_writes_every_course_notebook(tmp_path, capsys):
    assert main(["exercises", "--out", str(tmp_path / "ex")]) == 0
    written = sorted(p.stem for p in (tmp_path / "ex").glob("*.ipynb"))
    assert written == [p.stem for p in COURSE]
    assert "stubs" in capsys.readouterr().out
    for p in (tmp_path / "ex").glob("*.ipynb"):
        assert not any("solution" in tags(c) for c in read(p).cells)
