"""pytest configuration for the unit tests and for notebooks run by ``pytest --nbval``.

* Every notebook kernel runs in test mode (``GPT_COURSE_MODE=test``): kernels inherit
  this process's environment, so setting it here is enough.
* When an offline mirror is configured (``GPT_COURSE_DATA_MIRROR``), tiktoken's cache is
  seeded from it so ``tiktoken.get_encoding("gpt2")`` never touches the network.
* Notebook stderr (warnings, progress bars) and HTML reprs are not compared; text
  outputs are compared strictly after the sanitizer in ``tests/nbval_sanitize.cfg``.
* A notebook cell that takes more than a third of nbval's per-cell timeout
  (``--nbval-cell-timeout`` in pyproject.toml) fails, naming the cell, its duration and the
  budget: the suite keeps a 3x margin, so a machine up to 3x slower still passes.
"""

import os

import pytest

os.environ["GPT_COURSE_MODE"] = "test"
# Keep numerical libraries deterministic and quiet in kernels.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PYTHONHASHSEED", "0")
# Figures must reach the notebook as display data, exactly as in the stored outputs: force
# Jupyter's inline backend even when the caller exported another one (e.g. MPLBACKEND=Agg).
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"


def pytest_configure(config):
    from shared.resources import mirror_dir, seed_tiktoken_cache

    if mirror_dir() is not None:
        seed_tiktoken_cache()


def pytest_collectstart(collector):
    # nbval's notebook collector compares every output key not listed in skip_compare.
    if getattr(collector, "skip_compare", None) is not None:
        collector.skip_compare += ("stderr", "text/html", "application/javascript")


# A cell may take at most this fraction of nbval's per-cell timeout.
CELL_TIMEOUT_MARGIN = 3


def cell_timeout(config) -> float:
    """nbval's per-cell timeout in seconds, as configured (pyproject.toml's addopts)."""
    return float(config.getoption("nbval_cell_timeout"))


def cell_over_budget(duration_s: float, timeout_s: float, margin: float = CELL_TIMEOUT_MARGIN):
    """Why a cell that ran ``duration_s`` seconds breaks the margin, or None if it keeps it."""
    budget = timeout_s / margin
    if duration_s <= budget:
        return None
    return (
        f"took {duration_s:.1f} s, over its budget of {budget:.4g} s (1/{margin:g} of "
        f"--nbval-cell-timeout={timeout_s:g}): on a machine {margin:g}x slower it would time "
        "out. Make the cell cheaper in test mode (shared.get_settings())"
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:  # pragma: no cover - nbval is a requirement
        return report
    if isinstance(item, IPyNbCell) and call.when == "call" and report.passed:
        problem = cell_over_budget(call.duration, cell_timeout(item.config))
        if problem is not None:
            report.outcome = "failed"
            report.longrepr = f"{item.nodeid} {problem}"
    return report
