"""pytest configuration for the unit tests and for notebooks run by ``pytest --nbval``.

* Every notebook kernel runs in test mode (``GPT_COURSE_MODE=test``): kernels inherit
  this process's environment, so setting it here is enough.
* When an offline mirror is configured (``GPT_COURSE_DATA_MIRROR``), tiktoken's cache is
  seeded from it so ``tiktoken.get_encoding("gpt2")`` never touches the network.
* Notebook stderr (warnings, progress bars) and HTML reprs are not compared; text
  outputs are compared strictly after the sanitizer in ``tests/nbval_sanitize.cfg``.
"""

import os

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
