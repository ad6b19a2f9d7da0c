"""Run the course notebooks with papermill and print a table of seconds per notebook.

    python ci/run_notebooks.py                 # every nbs/NN_*.ipynb in smoke mode (SMOKE=True)
    python ci/run_notebooks.py --full 02 03    # the full recipe of chosen notebooks
    python ci/run_notebooks.py --full --in-place 02   # refresh a notebook's committed outputs

Executed copies go to runs/notebooks/<mode>/ (gitignored) unless --in-place. Exits 1 if any notebook fails.
This is the same runner as `argen-lit course` (argen_lit.cli).
"""
import sys
from argen_lit.cli import main

if __name__ == "__main__":
    sys.exit(main(["course", *sys.argv[1:]]))
