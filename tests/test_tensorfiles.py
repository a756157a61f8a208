"""shared.tensorfiles: weight files read as untrusted input, checked against the model."""

import pytest
import torch
from safetensors.torch import save_file

from shared.tensorfiles import TensorFileError, check_tensors, read_tensors


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"a": torch.zeros(2, 3), "b": torch.ones(4)}, path)
    return path


def test_read_tensors_returns_every_tensor(weights):
    tensors = read_tensors(weights)
    assert set(tensors) == {"a", "b"} and tensors["a"].shape == (2, 3)


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[:-5],  # truncated by a full disk
        lambda data: b"\x00" * 8,  # a header length of zero
        lambda data: (2**50).to_bytes(8, "little") + data[8:],  # a header of 2**50 bytes
        lambda data: b"{" + data,  # not a safetensors file at all
    ],
    ids=["truncated", "empty-header", "huge-header", "not-safetensors"],
)
def test_a_damaged_file_is_one_error_naming_the_file(weights, damage):
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(
        TensorFileError, match=r"model\.safetensors is not a readable safetensors file.*do this"
    ):
        read_tensors(weights, "model weights", remedy="do this")


def test_a_missing_file_says_what_should_be_there(tmp_path):
    with pytest.raises(TensorFileError, match="is missing: the optimizer state should be there"):
        read_tensors(tmp_path / "optimizer.safetensors", "optimizer state")


def test_check_tensors_lists_missing_unexpected_and_wrong_shapes():
    model = torch.nn.Linear(3, 2)
    check_tensors(model.state_dict(), model.state_dict(), "f", "r")  # a match passes
    with pytest.raises(TensorFileError, match=r"f does not fit this model \(missing bias\); r"):
        check_tensors({"weight": torch.zeros(2, 3)}, model.state_dict(), "f", "r")
    with pytest.raises(TensorFileError, match=r"unexpected extra"):
        check_tensors({**model.state_dict(), "extra": torch.zeros(1)}, model.state_dict(), "f", "r")
    with pytest.raises(
        TensorFileError, match=r"wrong shapes: weight is \(4, 3\), the model needs \(2, 3\)"
    ):
        check_tensors(
            {"weight": torch.zeros(4, 3), "bias": torch.zeros(2)}, model.state_dict(), "f", "r"
        )


def _crafted(header: dict, data: bytes) -> bytes:
    import json

    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + data


@pytest.mark.parametrize(
    "offsets", [[-8, 0], [0, 64], [4, 2]], ids=["negative", "past-the-end", "reversed"]
)
def test_crafted_offsets_never_read_header_bytes_as_weights(tmp_path, offsets):
    path = tmp_path / "model.safetensors"
    header = {"w": {"dtype": "F32", "shape": [2], "data_offsets": offsets}}
    path.write_bytes(_crafted(header, b"\x00" * 8))
    with pytest.raises(TensorFileError, match="is not a readable safetensors file"):
        read_tensors(path)
