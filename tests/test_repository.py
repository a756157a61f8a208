"""Rules of the repository: generated modules match notebooks, imports flow one way,
every public name resolves through ``shared`` and is defined exactly once."""

import ast
import json
import re
import shutil
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
    assert stale_modules(tmp_path) == []
    edited = tmp_path / target.module
    edited.write_text(edited.read_text(encoding="utf-8") + "\nHAND_EDIT = 1\n", encoding="utf-8")
    problems = stale_modules(tmp_path)
    assert len(problems) == 1
    assert str(target.notebook) in problems[0] and str(target.module) in problems[0]


def test_export_is_deterministic():
    assert [m.text for m in export_all()] == [m.text for m in export_all()]


def _imported_modules(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def main_modules() -> set[str]:
    """Dotted names of the modules exported by each chapter's main notebook (chNN.ipynb)."""
    return {
        ".".join(m.module.with_suffix("").parts)
        for m in export_all()
        if m.notebook.stem == m.notebook.parent.name[:4]
    }


@pytest.mark.parametrize("module", chapter_modules(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_chapter_modules_import_only_earlier_chapters(module):
    own = chapter_number(module.parent.name)
    dotted = ".".join(module.relative_to(REPO_ROOT).with_suffix("").parts)
    mains = main_modules()
    for name in _imported_modules(ast.parse(module.read_text(encoding="utf-8"))):
        top = name.split(".")[0]
        assert top != "shared", (
            f"{module.name} imports shared; chapter modules import earlier chapter modules directly"
        )
        other = chapter_number(top)
        if other is None or other < own:
            continue
        # a bonus module (e.g. chapter 5's speed and corpus notebooks) may build on its
        # chapter's main module and on the chapter's other bonus modules (no cycles: see below)
        bonus_in_own_chapter = other == own and dotted not in mains and name != dotted
        assert bonus_in_own_chapter, (
            f"{module.relative_to(REPO_ROOT)} imports {name}, which is not an earlier chapter"
        )


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


def test_shared_all_resolves_without_duplicates():
    assert len(shared.__all__) == len(set(shared.__all__)), (
        "a name is listed twice in shared.__all__"
    )
    missing = [name for name in shared.__all__ if not hasattr(shared, name)]
    assert not missing, f"shared.__all__ names that do not resolve: {missing}"


def test_every_public_chapter_name_is_reexported_by_shared():
    for module in export_all():
        tree = ast.parse(module.text)
        exported = next(
            ast.literal_eval(node.value)
            for node in tree.body
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "__all__"
        )
        missing = sorted(set(exported) - set(shared.__all__))
        assert not missing, f"{module.module} defines {missing}; add them to shared/__init__.py"


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
