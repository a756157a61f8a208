"""Rules of the repository: generated modules match notebooks, chapter modules import each
other without cycles, every public name is defined exactly once, notebooks and modules stay
at reading size. (Layering and the facade: tests/test_layering.py.)"""

import ast
import json
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

import shared
from tools.export import REPO_ROOT, chapter_notebooks, export_all, stale_modules

CHAPTER_RE = re.compile(r"^ch(\d\d)_")


def chapter_number(name: str) -> int | None:
    match = CHAPTER_RE.match(name)
    return int(match.group(1)) if match else None


def chapter_modules() -> list[Path]:
    return [REPO_ROOT / m.module for m in export_all()]


def test_every_chapter_module_matches_its_notebook():
    problems = stale_modules()
    assert not problems, "\n".join(problems)


def test_hand_edited_module_is_reported_with_its_notebook(tmp_path):
    modules = export_all()
    assert modules, "no chapter exports a module"
    target = modules[0]
    for module in modules:
        (tmp_path / module.notebook).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / module.notebook, tmp_path / module.notebook)
        shutil.copy(REPO_ROOT / module.module, tmp_path / module.module)
    # the exporter sorts imports as ruff does, calling first-party what the repository holds
    shutil.copytree(
        REPO_ROOT / "shared", tmp_path / "shared", ignore=shutil.ignore_patterns("*.pyc")
    )
    for init in REPO_ROOT.glob("ch[0-9][0-9]_*/__init__.py"):
        shutil.copy(init, tmp_path / init.relative_to(REPO_ROOT))
    assert stale_modules(tmp_path) == []
    edited = tmp_path / target.module
    edited.write_text(edited.read_text(encoding="utf-8") + "\nHAND_EDIT = 1\n", encoding="utf-8")
    problems = stale_modules(tmp_path)
    assert len(problems) == 1
    assert str(target.notebook) in problems[0] and str(target.module) in problems[0]


def _imported_modules(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_modules_of_one_chapter_import_each_other_without_cycles():
    modules = {
        ".".join(p.relative_to(REPO_ROOT).with_suffix("").parts): p for p in chapter_modules()
    }
    graph = {
        name: {
            imported
            for imported in _imported_modules(ast.parse(path.read_text(encoding="utf-8")))
            if imported in modules and imported != name
        }
        for name, path in modules.items()
    }
    visiting, done = set(), set()

    def visit(name, chain):
        assert name not in visiting, f"import cycle between chapter modules: {' -> '.join(chain)}"
        if name in done:
            return
        visiting.add(name)
        for imported in sorted(graph[name]):
            visit(imported, [*chain, imported])
        visiting.discard(name)
        done.add(name)

    for name in sorted(graph):
        visit(name, [name])


def test_notebooks_import_earlier_chapters_only_through_shared():
    offenders = []
    for notebook in sorted(REPO_ROOT.glob("ch[0-9][0-9]_*/*.ipynb")):
        nb = json.loads(notebook.read_text(encoding="utf-8"))
        for index, cell in enumerate(nb["cells"]):
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            if source.startswith("#| export"):
                continue  # exported cells become module code and follow the module rule
            try:
                tree = ast.parse(source)
            except SyntaxError:
                continue  # IPython magics; such cells import nothing from chapters
            for name in _imported_modules(tree):
                if chapter_number(name.split(".")[0]) is not None:
                    offenders.append(
                        f"{notebook.relative_to(REPO_ROOT)} cell {index}: imports {name}"
                    )
    assert not offenders, "import earlier chapters through shared:\n" + "\n".join(offenders)


def test_every_generated_module_is_offered_by_the_facade():
    offered = set(shared.facade_index().values())
    for module in export_all():
        dotted = ".".join(module.module.with_suffix("").parts)
        assert dotted in offered or not _declared(module.text), (
            f"{module.module} is not read by shared/__init__.py; add its chapter to _CHAPTERS"
        )


def _declared(text: str) -> list[str]:
    tree = ast.parse(text)
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "__all__":
            return ast.literal_eval(node.value)
    return []


def test_no_name_is_defined_in_two_modules():
    definitions = defaultdict(list)
    sources = chapter_modules() + sorted((REPO_ROOT / "shared").glob("*.py"))
    for path in sources:
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                definitions[node.name].append(path.relative_to(REPO_ROOT).as_posix())
    duplicated = {name: paths for name, paths in definitions.items() if len(paths) > 1}
    assert not duplicated, f"defined more than once: {duplicated}"


def test_notebooks_ran_top_to_bottom():
    for notebook in sorted(REPO_ROOT.glob("ch[0-9][0-9]_*/*.ipynb")):
        nb = json.loads(notebook.read_text(encoding="utf-8"))
        counts = [c["execution_count"] for c in nb["cells"] if c["cell_type"] == "code"]
        assert counts == list(range(1, len(counts) + 1)), (
            f"{notebook.relative_to(REPO_ROOT)}: execution counts {counts} are not 1..n; "
            "re-run it with tools/run_notebooks.py"
        )


def test_every_chapter_notebook_is_found():
    names = [p.relative_to(REPO_ROOT).as_posix() for p in chapter_notebooks()]
    assert "ch02_data/ch02.ipynb" in names


MAX_CELL_LINES = 60
MAX_MODULE_LINES = 500
MAX_CLI_LINES = 200


def test_no_code_cell_is_longer_than_a_reading_screen():
    long_cells = []
    for notebook in chapter_notebooks():
        nb = json.loads(notebook.read_text(encoding="utf-8"))
        for index, cell in enumerate(nb["cells"]):
            lines = len("".join(cell["source"]).splitlines())
            if cell["cell_type"] == "code" and lines > MAX_CELL_LINES:
                long_cells.append(f"{notebook.relative_to(REPO_ROOT)} cell {index}: {lines} lines")
    assert not long_cells, (
        f"code cells over {MAX_CELL_LINES} lines (split them, or move machinery to shared/):\n"
        + "\n".join(long_cells)
    )


def test_generated_modules_and_command_lines_stay_small():
    too_long = [
        f"{m.module}: {len(m.text.splitlines())} lines (send cells to a second module with "
        "'#| export <module>')"
        for m in export_all()
        if len(m.text.splitlines()) > MAX_MODULE_LINES
    ]
    for cli in sorted(REPO_ROOT.glob("ch[0-9][0-9]_*/__main__.py")):
        lines = len(cli.read_text(encoding="utf-8").splitlines())
        if lines >= MAX_CLI_LINES:
            too_long.append(f"{cli.relative_to(REPO_ROOT)}: {lines} lines (use shared.cli)")
    assert not too_long, "\n".join(too_long)


# --- nbval's per-cell timeout keeps a 3x margin (enforced by the root conftest.py) ----------


def root_conftest(config):
    """The repository's conftest.py as pytest loaded it: the module whose hook checks cells."""
    path = REPO_ROOT / "conftest.py"
    for plugin in config.pluginmanager.get_plugins():
        file = getattr(plugin, "__file__", None)
        if file and Path(file).resolve() == path:
            return plugin
    raise AssertionError(f"pytest did not load {path}")


def test_a_notebook_cell_over_a_third_of_the_cell_timeout_fails(request):
    over_budget = root_conftest(request.config).cell_over_budget
    assert over_budget(399, 1200) is None and over_budget(400, 1200) is None
    problem = over_budget(401, 1200)
    assert problem is not None
    assert "took 401.0 s" in problem and "budget of 400 s" in problem
    assert "--nbval-cell-timeout=1200" in problem


def test_the_cell_budget_reads_the_timeout_set_in_pyproject(request):
    config = request.config
    assert config.inipath == REPO_ROOT / "pyproject.toml"
    timeouts = [o for o in config.getini("addopts") if o.startswith("--nbval-cell-timeout=")]
    assert len(timeouts) == 1, f"pyproject.toml's addopts should set the timeout once: {timeouts}"
    if any(str(arg).startswith("--nbval-cell-timeout") for arg in config.invocation_params.args):
        pytest.skip("the cell timeout was overridden on the command line")
    configured = float(timeouts[0].split("=", 1)[1])
    assert root_conftest(config).cell_timeout(config) == configured


@pytest.mark.slow
def test_nbval_fails_a_notebook_cell_that_breaks_the_margin(tmp_path):
    # A real nbval run of a two-cell notebook with a 3 s timeout: the 1.5 s cell is over its
    # 1 s budget and fails by name; the quick one passes.
    import nbformat

    cells = [nbformat.v4.new_code_cell(code) for code in ("x = 1", "import time\ntime.sleep(1.5)")]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), tmp_path / "slow.ipynb")
    command = [sys.executable, "-m", "pytest", "-q", "--nbval", "--nbval-cell-timeout=3",
               "-p", "conftest", str(tmp_path / "slow.ipynb")]  # fmt: skip
    out = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "1 failed, 1 passed" in out.stdout
    assert "slow.ipynb::Cell 1 took 1." in out.stdout and "budget of 1 s" in out.stdout
