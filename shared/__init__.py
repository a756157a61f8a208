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
    use_mirror_for_tiktoken,
)
from shared.runtime import get_device, set_seed
from shared.settings import CourseSettings, get_settings, mode_banner

# --- chapter 2: working with text data -------------------------------------
# isort: split
from ch02_data.text_data import (
    END_OF_TEXT,
    TOKEN_PATTERN,
    UNKNOWN_TOKEN,
    GPTDataset,
    SimpleTokenizerV1,
    SimpleTokenizerV2,
    build_vocab,
    create_dataloader,
    simple_tokenize,
)

# --- chapter 3: attention ----------------------------------------------------
# isort: split
from ch03_attention.attention import (
    CausalAttention,
    MultiHeadAttention,
    MultiHeadAttentionWrapper,
    SelfAttentionV1,
    SelfAttentionV2,
)

# --- chapter 4: the GPT model ------------------------------------------------
# isort: split
from ch04_gpt_model.gpt_model import (
    GELU,
    GPT2_PRESETS,
    GPT_CONFIG_124M,
    FeedForward,
    GPTModel,
    LayerNorm,
    TransformerBlock,
    count_parameters,
    generate_text_simple,
    gpt2_config,
    parameter_memory_mb,
)

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
    "use_mirror_for_tiktoken",
    "set_seed",
    # chapter 2
    "END_OF_TEXT",
    "TOKEN_PATTERN",
    "UNKNOWN_TOKEN",
    "GPTDataset",
    "SimpleTokenizerV1",
    "SimpleTokenizerV2",
    "build_vocab",
    "create_dataloader",
    "simple_tokenize",
    # chapter 3
    "CausalAttention",
    "MultiHeadAttention",
    "MultiHeadAttentionWrapper",
    "SelfAttentionV1",
    "SelfAttentionV2",
    # chapter 4
    "GELU",
    "GPT2_PRESETS",
    "GPT_CONFIG_124M",
    "FeedForward",
    "GPTModel",
    "LayerNorm",
    "TransformerBlock",
    "count_parameters",
    "generate_text_simple",
    "gpt2_config",
    "parameter_memory_mb",
]

# Offline machines: let tiktoken.get_encoding('gpt2') find the mirror's BPE files.
use_mirror_for_tiktoken()
