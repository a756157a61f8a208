"""The one import surface of the course.

Notebooks import code from earlier chapters only through this package
(``from shared import GPTModel``). Chapter modules themselves import earlier
chapter modules directly and never import ``shared``, so there is no cycle.
"""

# --- course infrastructure -------------------------------------------------
from shared.resources import (
    RESOURCES,
    ChecksumError,
    Resource,
    ResourceError,
    ResourceUnavailableError,
    fetch,
    gpt2_tokenizer,
    seed_tiktoken_cache,
)
from shared.runtime import get_device, set_seed
from shared.settings import CourseSettings, get_settings, mode_banner

# --- chapter 2: working with text data -------------------------------------

# --- chapter 3: attention ----------------------------------------------------

# --- chapter 4: the GPT model ------------------------------------------------

__all__ = [
    # course infrastructure
    "RESOURCES",
    "ChecksumError",
    "CourseSettings",
    "Resource",
    "ResourceError",
    "ResourceUnavailableError",
    "fetch",
    "get_device",
    "get_settings",
    "gpt2_tokenizer",
    "mode_banner",
    "seed_tiktoken_cache",
    "set_seed",
    # chapter 2
    # chapter 3
    # chapter 4
]
