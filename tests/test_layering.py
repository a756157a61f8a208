"""The lazy facade ``shared`` and the layering rules, checked on every .py file.

- ``shared/__init__.py`` offers every chapter's public API lazily: ``import shared.io`` loads
  no chapter; names resolve on first use; ``dir(shared)`` lists them all.
- chapter N imports only chapters < N (and its own chapter's other modules) and ``shared``'s
  infrastructure modules; ``shared``'s infrastructure imports no chapter; only notebooks,
  tests and benchmarks import names from the facade;
- only ``shared/resources.py`` calls ``tiktoken.get_encoding``: the rest of the course gets
  the GPT-2 tokenizer from ``shared.resources.gpt2_tokenizer``.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import shared
from tools.export import REPO_ROOT

# The facade's names when it was a hand-written list (2026-11): a promise to learners.
# Every one must keep resolving; a renamed name needs an alias.
PROMISED_NAMES = """
    CachedDecoder CausalAttention ChecksumError ClassifierHistory CourseSettings
    END_OF_TEXT END_OF_TEXT_ID FeedForward GELU GPT2Checkpoint GPT2_HUB_REPOS
    GPT2_PRESETS GPT2_WEIGHT_MAP GPTDataset GPTModel GPT_CONFIG_124M INSTRUCTION_KEYS
    InstructionDataError InstructionDataset JudgeReplyError JudgeReport
    JudgeUnavailableError KVCache LayerNorm LinearWithLoRA LoRALayer MANIFEST_NAME
    MultiHeadAttention MultiHeadAttentionWrapper NonFiniteLossError OLLAMA_MODEL
    OLLAMA_URL PROMPT_PREAMBLE PretrainConfig RESOURCES RESPONSE_HEADER Resource
    ResourceError ResourceUnavailableError SHARD_FORMAT SPAM_CLASS_NAMES SPAM_LABEL_IDS
    STANDIN_CONFIG SafetensorsReader SelfAttentionV1 SelfAttentionV2 ShardError
    SimpleTokenizerV1 SimpleTokenizerV2 SpamDataset TOKEN_DTYPE TOKEN_PATTERN
    TRAINABLE_PARTS TokenWindows TrainingState TransformerBlock UNKNOWN_TOKEN
    adamw_param_groups apply_top_k apply_top_p atomic_folder build_vocab
    calc_accuracy_loader calc_classification_loss_batch calc_classification_loss_loader
    calc_loss_batch calc_loss_loader causal_mask check_decoding_settings check_shard
    classify config_from_model cosine_lr count_parameters count_trainable_parameters
    create_balanced_dataset create_dataloader create_instruction_dataloader
    create_spam_dataloaders custom_collate_fn decode_incrementally download_gpt2
    evaluate_classifier evaluate_model extract_response fetch format_input format_prompt
    freeze_all_but_last_block generate generate_and_print_sample generate_cached
    generate_response generate_responses generate_text_simple get_device get_settings
    gpt2_checkpoint gpt2_config gpt2_config_from_hf gpt2_tokenizer hide_padded_vocab
    judge_prompt judge_responses lcs_length list_documents load_checkpoint
    load_classifier load_gpt2 load_instruction_data load_manifest load_responses
    load_sms_spam make_training_setup mean_rouge_l merge_lora mode_banner
    next_token_from_logits ollama_help ollama_status open_shards padded_vocab_size
    parameter_memory_mb parse_judge_score prepare_classifier prepare_corpus
    prepare_spam_splits pretrain query_ollama replace_linear_with_lora
    replace_output_head response_token_loss rouge_l save_checkpoint save_classifier
    save_responses seed_tiktoken_cache set_seed setup_distributed simple_tokenize
    split_dataframe split_instruction_data stop_at_new_section stream_answer
    stream_generate stream_token_ids take_first text_to_token_ids token_ids_to_text
    tokenize_document train_classifier train_model transposed_weight
    use_mirror_for_tiktoken use_sdpa_attention validate_instruction_data
    write_atomically write_json_atomically write_standin_gpt2
""".split()

INFRASTRUCTURE = {path.stem for path in (REPO_ROOT / "shared").glob("*.py")} - {"__init__"}


def _chapter(top: str) -> int | None:
    if len(top) > 4 and top.startswith("ch") and top[2:4].isdigit() and top[4] == "_":
        return int(top[2:4])
    return None


def python_files() -> list[Path]:
    folders = [
        "shared",
        "tools",
        "benchmarks",
        *sorted(p.name for p in REPO_ROOT.glob("ch[0-9][0-9]_*")),
    ]
    return sorted(path for folder in folders for path in (REPO_ROOT / folder).glob("*.py"))


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) for every import in the file, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def layering_problems(path: Path) -> list[str]:
    rel = path.relative_to(REPO_ROOT).as_posix()
    kind = rel.split("/")[0]
    own = _chapter(kind)
    problems = []
    for module, names in _imports(path):
        top = module.split(".")[0]
        other = _chapter(top)
        uses_facade = module == "shared" and any(name not in INFRASTRUCTURE for name in names)
        uses_facade |= module == "shared" and not names  # plain `import shared`
        if uses_facade and kind not in ("benchmarks",):
            problems.append(f"{rel} uses the facade ({module} {names}); import the defining module")
        if other is None:
            continue
        if kind == "shared":
            problems.append(f"{rel} (infrastructure) imports chapter module {module}")
        elif own is not None and other > own:
            problems.append(f"{rel} imports {module}, a later chapter")
        elif kind == "tools":
            problems.append(f"{rel} imports chapter module {module}; tools stay chapter-free")
    return problems


@pytest.mark.parametrize("path", python_files(), ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_imports_follow_the_layering_rules(path):
    problems = layering_problems(path)
    assert not problems, "\n".join(problems)


def test_the_layering_check_catches_each_kind_of_violation(tmp_path, monkeypatch):
    fake_root = tmp_path
    for folder, text in {
        "shared": "from ch02_data.text_data import GPTDataset\n",
        "ch03_attention": "from ch04_gpt_model.gpt_model import GPTModel\nfrom shared import fetch\n",
        "tools": "import shared\n",
    }.items():
        (fake_root / folder).mkdir()
        (fake_root / folder / "bad.py").write_text(text, encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "REPO_ROOT", fake_root)
    assert len(layering_problems(fake_root / "shared" / "bad.py")) == 1
    assert len(layering_problems(fake_root / "ch03_attention" / "bad.py")) == 2
    assert len(layering_problems(fake_root / "tools" / "bad.py")) == 1


# The one place that may load tiktoken's GPT-2 encoding itself: everything else calls
# shared.resources.gpt2_tokenizer, which works offline from the mirror and raises the course's
# resource error naming the files. (Tests load the encoding directly and are not checked.)
TOKENIZER_OWNER = "shared/resources.py"
_NOT_SCANNED = {"tests", "build", "dist", "outputs", "__pycache__", "site-packages"}


def tokenizer_bypasses(root: Path) -> list[str]:
    """Every ``tiktoken.get_encoding`` in a .py file under ``root`` outside ``TOKENIZER_OWNER``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        parts = rel.parts[:-1]
        if rel.as_posix() == TOKENIZER_OWNER or any(
            p in _NOT_SCANNED or p.startswith(".") or p.endswith(".egg-info") for p in parts
        ):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.Import)
                   for a in n.names if a.name == "tiktoken"}  # fmt: skip
        for node in ast.walk(tree):
            direct = isinstance(node, ast.ImportFrom) and node.module == "tiktoken"
            if (direct and any(a.name == "get_encoding" for a in node.names)) or (
                isinstance(node, ast.Attribute) and node.attr == "get_encoding"
                and isinstance(node.value, ast.Name) and node.value.id in aliases
            ):  # fmt: skip
                found.append(f"{rel.as_posix()}:{node.lineno}")
    return found


def test_only_the_course_tokenizer_function_calls_tiktoken_get_encoding():
    bypasses = tokenizer_bypasses(REPO_ROOT)
    assert not bypasses, f"call shared.resources.gpt2_tokenizer() instead at: {bypasses}"


def test_the_tokenizer_check_finds_every_spelling_of_the_call(tmp_path):
    files = {
        "shared/resources.py": "import tiktoken\nenc = tiktoken.get_encoding('gpt2')\n",
        "tests/test_x.py": "import tiktoken\nenc = tiktoken.get_encoding('gpt2')\n",
        "ch09_x/a.py": '"""tiktoken.get_encoding in a docstring is fine."""\nimport tiktoken as tk\n'
        "enc = tk.get_encoding('gpt2')\n",
        "ch09_x/b.py": "from tiktoken import get_encoding\n",
        "conftest.py": "import tiktoken\n\ndef f():\n    return tiktoken.get_encoding('gpt2')\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert tokenizer_bypasses(tmp_path) == ["ch09_x/a.py:3", "ch09_x/b.py:1", "conftest.py:4"]


def test_importing_infrastructure_loads_no_chapter():
    code = "import shared.io, sys; print(sorted(m for m in sys.modules if m.startswith('ch0')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_facade_name_imports_only_what_defines_it():
    code = (
        "import shared, sys; shared.GPTDataset; "
        "print(sorted(m for m in sys.modules if m.startswith('ch0')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['ch02_data', 'ch02_data.text_data']"


def test_every_promised_name_still_resolves():
    missing = [name for name in PROMISED_NAMES if name not in shared.__all__]
    assert not missing, f"names learners rely on no longer resolve: {missing}"
    for name in PROMISED_NAMES:
        assert getattr(shared, name) is not None


def test_dir_lists_every_name_for_tab_completion():
    assert set(shared.__all__) <= set(dir(shared))


def test_no_public_name_is_declared_by_two_modules():
    declared: dict[str, list[str]] = {}
    for module, _ in shared._module_sources():
        for name in __import__(module, fromlist=["_"]).__all__:
            declared.setdefault(name, []).append(module)
    twice = {name: mods for name, mods in declared.items() if len(mods) > 1}
    assert not twice, f"declared in two modules' __all__: {twice}"


def test_declared_names_match_the_modules_namespaces():
    for name, module in shared.facade_index().items():
        assert hasattr(__import__(module, fromlist=["_"]), name), f"{module}.__all__ lists {name}"


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'GPTModle'"):
        shared.GPTModle  # noqa: B018
