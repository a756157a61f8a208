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

__all__ = [
    "CourseSettings",
    "MODE_ENV_VAR",
    "get_settings",
    "mode_banner",
]

MODE_ENV_VAR = "GPT_COURSE_MODE"
MODES = ("full", "test")


@dataclass(frozen=True)
class CourseSettings:
    """Every number that differs between the modes, read by the notebooks from here."""

    mode: str
    # chapter 5: epochs of pretraining on The Verdict (the book's recipe is 10; test mode's 4
    # are exactly the first 4 of that run, since nothing in the loop depends on the total)
    pretrain_epochs: int
    # chapter 5+: which GPT-2 weights the notebooks load ("standin" = small random
    # checkpoint written by transformers, no download)
    gpt2_source: str
    # chapter 5 speed notebook: new tokens in the decoding race (the benchmark uses 200),
    # timing repeats, and whether to time torch.compile (compiling takes minutes on a CPU)
    speed_decode_tokens: int
    speed_repeats: int
    speed_compile_demo: bool
    # chapter 5 corpus notebook: optimizer steps of its small pretraining run
    corpus_max_steps: int
    # --- chapter 6 fields ---
    # chapter 6: messages used from each split (None = all 1,045 / 149 / 300)
    classify_train_subset: int | None
    classify_val_subset: int | None
    classify_test_subset: int | None
    # chapter 6: epochs of classification fine-tuning (the standard recipe is 5)
    classify_epochs: int
    # chapter 6: evaluate the losses every N optimizer steps ...
    classify_eval_freq: int
    # chapter 6: ... over this many batches of the training and validation sets
    classify_eval_iter: int
    # chapter 6: AdamW learning rate when training the last block (pretrained weights need
    # small steps; the random stand-in of test mode needs bigger ones to learn visibly)
    classify_lr: float
    # chapter 6: AdamW learning rate for LoRA (LoRA usually wants a larger one)
    classify_lora_lr: float
    # chapter 6 exercises: epochs of each exercise's fine-tuning run
    classify_exercise_epochs: int
    # --- chapter 7 fields ---
    # chapter 7: training examples used for instruction fine-tuning (None = all 935)
    instruct_train_subset: int | None
    # chapter 7: validation examples for the validation loss (None = all 55)
    instruct_val_subset: int | None
    # chapter 7: test examples the model answers and is scored on (None = all 110)
    instruct_test_subset: int | None
    # chapter 7: epochs of instruction fine-tuning (the book's recipe is 2)
    instruct_epochs: int
    # chapter 7: evaluate the losses every N optimizer steps ...
    instruct_eval_freq: int
    # chapter 7: ... over this many batches of the training and validation sets
    instruct_eval_iter: int
    # chapter 7: most tokens generated per answer (answers end earlier at <|endoftext|>)
    instruct_max_new_tokens: int
    # chapter 7 exercises: training examples for each of their fine-tuning runs (None = all 935)
    instruct_exercise_train_subset: int | None

    @property
    def is_test(self) -> bool:
        return self.mode == "test"

    def pick(self, *, full, test):
        """Return ``full`` or ``test`` depending on the mode (for one-off numbers)."""
        return test if self.is_test else full


# Each setting's value as (full mode, test mode); CourseSettings says what each one is for.
_SETTINGS = {
    # chapter 5 and its bonus notebooks
    "pretrain_epochs": (10, 4),
    "gpt2_source": ("hub", "standin"),
    "speed_decode_tokens": (200, 60),
    "speed_repeats": (3, 1),
    "speed_compile_demo": (True, False),
    "corpus_max_steps": (200, 30),
    # chapter 6
    "classify_train_subset": (None, 160),
    "classify_val_subset": (None, 64),
    "classify_test_subset": (None, 64),
    "classify_epochs": (5, 3),
    "classify_eval_freq": (50, 5),
    "classify_eval_iter": (5, 2),
    "classify_lr": (5e-5, 5e-4),
    "classify_lora_lr": (5e-4, 2e-3),
    "classify_exercise_epochs": (5, 1),
    # chapter 7
    "instruct_train_subset": (None, 24),
    "instruct_val_subset": (None, 16),
    "instruct_test_subset": (None, 4),
    "instruct_epochs": (2, 1),
    "instruct_eval_freq": (5, 2),
    "instruct_eval_iter": (5, 1),
    "instruct_max_new_tokens": (256, 10),
    "instruct_exercise_train_subset": (None, 16),
}


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
    mode = current_mode()
    column = MODES.index(mode)
    return CourseSettings(mode=mode, **{name: both[column] for name, both in _SETTINGS.items()})


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
