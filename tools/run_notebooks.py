"""Execute notebooks top to bottom and store their outputs, as the tests expect them.

Stored outputs must come from one real run with execution counts 1..n, in the mode
that ``pytest --nbval`` checks (test mode). This script runs each notebook in a
fresh kernel with ``GPT_COURSE_MODE=test`` (and the tiktoken cache seeded when a
mirror is configured), then writes it back atomically. Regenerate the chapter
modules afterwards with ``python tools/export.py``.

Usage:
    python tools/run_notebooks.py ch02_data/ch02.ipynb [more.ipynb ...]
    python tools/run_notebooks.py --all
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def all_notebooks() -> list[Path]:
    return sorted(REPO_ROOT.glob("ch[0-9][0-9]_*/*.ipynb"))


def run_notebook(path: Path, timeout: int = 1800) -> float:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "name": "python3",
    }
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=False,
    )
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    nb.metadata.pop("widgets", None)
    tmp = path.with_name(path.name + ".tmp")
    nbformat.write(nb, tmp)
    tmp.replace(path)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--all", action="store_true", help="run every notebook of the course")
    args = parser.parse_args(argv)
    notebooks = all_notebooks() if args.all else [p.resolve() for p in args.notebooks]
    if not notebooks:
        parser.error("name notebooks to run, or pass --all")

    os.environ["GPT_COURSE_MODE"] = "test"
    # the backend the tests' kernels use (see conftest.py), so stored figures match
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    sys.path.insert(0, str(REPO_ROOT))
    from shared.resources import mirror_dir, seed_tiktoken_cache

    if mirror_dir() is not None:
        seed_tiktoken_cache()
    for path in notebooks:
        print(f"running {path.relative_to(REPO_ROOT)} ...", flush=True)
        print(f"  done in {run_notebook(path):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
