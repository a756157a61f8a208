"""shared.weights: which GPT-2 checkpoint a notebook or CLI loads (size, local folder, offline)."""

import json
import os
import socket
from pathlib import Path

import httpx
import huggingface_hub
import huggingface_hub.constants
import pytest
from helpers import run_module
from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
from safetensors.torch import save_file

from shared.resources import ResourceUnavailableError
from shared.settings import MODE_ENV_VAR
from shared.weights import STANDIN_CONFIG, gpt2_checkpoint, write_standin_gpt2

GPT2_124M_CONFIG = {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12,
                    "n_positions": 1024, "vocab_size": 50257}  # fmt: skip


def checkpoint_folder(folder: Path, config: dict | None = None, weights_file=True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    if weights_file:
        (folder / "model.safetensors").write_bytes(b"(not read by gpt2_checkpoint)")
    return folder


# --- fault tests: --gpt2 takes a local checkpoint folder --------------------------------


def test_local_folder_with_gpt2_124m_shapes_is_that_size(tmp_path, monkeypatch):
    monkeypatch.setenv(MODE_ENV_VAR, "full")
    folder = checkpoint_folder(tmp_path / "my-gpt2", GPT2_124M_CONFIG)
    for spec in (str(folder), folder):
        checkpoint = gpt2_checkpoint(spec)
        assert (checkpoint.folder, checkpoint.size) == (folder, "124M")
        assert not checkpoint.is_standin and checkpoint.is_local
        assert str(folder) in checkpoint.description and str(folder) in checkpoint.label


def test_local_folder_is_used_in_test_mode_too_and_loads(tmp_path, monkeypatch):
    from ch05_pretraining.gpt2_weights import load_gpt2

    monkeypatch.setenv(MODE_ENV_VAR, "test")
    folder = write_standin_gpt2(tmp_path / "small-gpt2")  # a real transformers checkpoint
    checkpoint = gpt2_checkpoint(str(folder))
    assert checkpoint.folder == folder and checkpoint.size is None  # not one of the four sizes
    model = load_gpt2(checkpoint.folder, size=checkpoint.size)
    assert model.tok_emb.weight.shape == (STANDIN_CONFIG["vocab_size"], STANDIN_CONFIG["n_embd"])


@pytest.mark.parametrize(
    ("files", "missing"),
    [({"config": True, "weights": False}, "no model.safetensors"),
     ({"config": False, "weights": True}, "no config.json"),
     ({"config": False, "weights": False}, "no model.safetensors and no config.json")],
)  # fmt: skip
def test_local_folder_lacking_a_file_names_it(tmp_path, files, missing):
    config = GPT2_124M_CONFIG if files["config"] else None
    folder = checkpoint_folder(tmp_path / "ckpt", config, weights_file=files["weights"])
    with pytest.raises(
        FileNotFoundError, match=f"{folder} is not a GPT-2 checkpoint folder: it has {missing}"
    ):
        gpt2_checkpoint(str(folder))


def test_local_folder_with_a_config_that_is_not_gpt2_is_refused(tmp_path):
    folder = checkpoint_folder(tmp_path / "bert", {"model_type": "bert", "hidden_size": 768})
    with pytest.raises(ValueError, match=r"config\.json is not a GPT-2 config .*n_embd"):
        gpt2_checkpoint(str(folder))


def test_unknown_size_and_missing_folder_say_what_is_accepted(tmp_path):
    with pytest.raises(ValueError, match=r"unknown GPT-2 size '125M'; pass a GPT-2 size \(124M, "):
        gpt2_checkpoint("125M")
    with pytest.raises(FileNotFoundError, match="does not exist; pass a GPT-2 size .* or a folder"):
        gpt2_checkpoint(str(tmp_path / "nowhere"))
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file, not a GPT-2 checkpoint folder"):
        gpt2_checkpoint(str(tmp_path / "model.safetensors"))


# --- fault tests: offline, the Hub download fails at once and says what to do ------------


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """Full mode; a fake hf_hub_download with an empty cache; no real connection allowed.

    ``hub.network_error`` is what a download over the network raises (None: it succeeds);
    ``hub.connect_error`` is what a connection to the Hub raises (None: it connects).
    """

    class Hub:
        network_error: Exception | None = LocalEntryNotFoundError("cannot find the requested files")
        connect_error: Exception | None = OSError(-2, "Name or service not known")
        cached: dict[str, str] = {}
        network_calls: list[str] = []
        connections: list = []

    def fake_download(repo_id, filename, *, local_files_only=False, **kwargs):
        if local_files_only:
            if filename in Hub.cached:
                return Hub.cached[filename]
            raise LocalEntryNotFoundError(f"{filename} is not in the cache")
        Hub.network_calls.append(filename)
        if Hub.network_error is not None:
            raise Hub.network_error
        return str(tmp_path / "downloaded" / filename)

    class Connection:
        def close(self):
            pass

    def fake_connect(address, timeout=None, *args, **kwargs):
        Hub.connections.append((address, timeout))
        if Hub.connect_error is not None:
            raise Hub.connect_error
        return Connection()

    monkeypatch.setenv(MODE_ENV_VAR, "full")
    for name in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(socket, "create_connection", fake_connect)
    return Hub


def assert_says_what_to_do(err: ResourceUnavailableError):
    message = str(err)
    for expected in ["GPT-2 124M", "--gpt2 <folder>", "HF_HUB_OFFLINE=1", f"{MODE_ENV_VAR}=test"]:
        assert expected in message
    assert "\n" not in message


def test_hf_hub_offline_never_touches_the_network(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # set after huggingface_hub was imported
    with pytest.raises(ResourceUnavailableError, match="HF_HUB_OFFLINE is set") as excinfo:
        gpt2_checkpoint("124M")
    assert_says_what_to_do(excinfo.value)
    assert hub.network_calls == [] and hub.connections == []


def test_unreachable_hub_fails_after_one_quick_connection(hub):
    with pytest.raises(
        ResourceUnavailableError, match="cannot connect to huggingface.co"
    ) as excinfo:
        gpt2_checkpoint("124M")
    assert_says_what_to_do(excinfo.value)
    assert hub.network_calls == []  # the Hub client (and its ~25 s of retries) never ran
    (((host, port), timeout),) = hub.connections
    assert (host, port) == ("huggingface.co", 443) and timeout <= 5


@pytest.mark.parametrize(
    "error",
    [LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub"),
     OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled"),
     httpx.ConnectError("[Errno 101] Network is unreachable")],
    ids=lambda err: type(err).__name__,
)  # fmt: skip
def test_hub_client_errors_become_resource_unavailable(hub, error):
    hub.connect_error, hub.network_error = None, error
    with pytest.raises(ResourceUnavailableError, match=type(error).__name__) as excinfo:
        gpt2_checkpoint("124M")
    assert_says_what_to_do(excinfo.value)
    assert excinfo.value.__cause__ is error


def test_files_in_the_hub_cache_are_used_without_the_network(hub, tmp_path):
    snapshot = checkpoint_folder(tmp_path / "snapshots" / "abc123", GPT2_124M_CONFIG)
    hub.cached = {name: str(snapshot / name) for name in ("config.json", "model.safetensors")}
    checkpoint = gpt2_checkpoint("124M")
    assert (checkpoint.folder, checkpoint.size, checkpoint.is_local) == (snapshot, "124M", False)
    assert hub.network_calls == [] and hub.connections == []


def test_the_real_hub_client_finds_cached_files_offline(tmp_path, monkeypatch):
    # huggingface_hub's own cache layout, read by the real hf_hub_download
    repo = tmp_path / "hub" / "models--openai-community--gpt2"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123456789abcdef")
    snapshot = checkpoint_folder(repo / "snapshots" / "0123456789abcdef", GPT2_124M_CONFIG)
    save_file({}, snapshot / "model.safetensors")
    monkeypatch.setenv(MODE_ENV_VAR, "full")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    def no_network(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(socket, "create_connection", no_network)
    assert gpt2_checkpoint("124M").folder == snapshot


@pytest.mark.slow
def test_cli_generate_runs_from_a_local_folder_in_full_mode(tmp_path):
    folder = write_standin_gpt2(tmp_path / "small-gpt2")
    env = {**os.environ, MODE_ENV_VAR: "full", "HF_HUB_OFFLINE": "1"}
    out = run_module(
        "ch05_pretraining", "generate", "--gpt2", str(folder), "--prompt", "Hello",
        "--max-new-tokens", "3", env=env, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"local folder {folder}" in out.stderr and out.stdout.startswith("Hello")
