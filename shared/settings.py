"""Course settings: full mode (the real course) and test mode (what CI runs).

One environment variable, ``GPT_COURSE_MODE``, chooses the mode:

* unset or ``full``: book-sized models and data, real GPT-2 weights downloaded on
  first use. This is what a learner gets by opening a notebook.
* ``test``: what ``pytest --nbval`` runs. No network, fixed seeds, CPU, and the
  expensive steps of later chapters shrunk (fewer steps, smaller subsets, a small
  stand-in checkpoint instead of the GPT-2 download). Cheap chapters are the same
  in both modes.

Notebooks read every number that differs between the modes from here, so a mode
changes numbers and sources, never code paths.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MODE_ENV_VAR = "GPT_COURSE_MODE"
MODES = ("full", "test")


@dataclass(frozen=True)
class CourseSettings:
    """The mode the course runs in; later chapters add their numbers here."""

    mode: str

    @property
    def is_test(self) -> bool:
        return self.mode == "test"

    def pick(self, *, full, test):
        """Return ``full`` or ``test`` depending on the mode (for one-off numbers)."""
        return test if self.is_test else full


def current_mode() -> str:
    """The course mode named by ``GPT_COURSE_MODE`` (default ``full``)."""
    raw = os.environ.get(MODE_ENV_VAR, "").strip().lower()
    if raw == "":
        return "full"
    if raw not in MODES:
        raise ValueError(
            f"{MODE_ENV_VAR}={os.environ[MODE_ENV_VAR]!r} is not a course mode; expected one of "
            f"{', '.join(MODES)}. Unset it for the full course, or set it to 'test' for the "
            "quick offline mode the tests use."
        )
    return raw


def get_settings() -> CourseSettings:
    """Settings for the current mode (read from the environment on each call)."""
    return CourseSettings(mode=current_mode())


def mode_banner(full_does: str | None = None) -> str:
    """A line for the top of a notebook saying which mode produced its outputs.

    ``full_does`` describes what the full mode does differently in this notebook;
    leave it out for chapters that are identical in both modes.
    """
    mode = current_mode()
    if full_does is None:
        return f"Course mode: {mode}. This notebook runs the same in full and test mode."
    if mode == "test":
        return (
            "Course mode: test (set by the test suite). The outputs below come from the quick "
            f"offline settings. In full mode this notebook {full_does}."
        )
    return f"Course mode: full. This notebook {full_does}."
