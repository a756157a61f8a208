import pytest

from shared.runtime import get_device, set_seed
from shared.settings import MODE_ENV_VAR, get_settings, mode_banner


@pytest.mark.parametrize(
    "value,mode", [("", "full"), ("full", "full"), ("test", "test"), (" TEST ", "test")]
)
def test_mode_from_environment(monkeypatch, value, mode):
    monkeypatch.setenv(MODE_ENV_VAR, value)
    settings = get_settings()
    assert settings.mode == mode
    assert settings.pick(full=10, test=2) == (2 if mode == "test" else 10)


def test_unknown_mode_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(MODE_ENV_VAR, "fast")
    with pytest.raises(ValueError, match="'fast' is not a course mode; expected one of full, test"):
        get_settings()


def test_banner_names_the_mode(monkeypatch):
    monkeypatch.setenv(MODE_ENV_VAR, "test")
    assert "test" in mode_banner("trains for 10 epochs")
    assert "trains for 10 epochs" in mode_banner("trains for 10 epochs")
    monkeypatch.setenv(MODE_ENV_VAR, "full")
    assert mode_banner().startswith("Course mode: full")


def test_test_mode_runs_on_cpu(monkeypatch):
    monkeypatch.setenv(MODE_ENV_VAR, "test")
    assert get_device().type == "cpu"


def test_set_seed_makes_torch_repeatable():
    import torch

    set_seed(7)
    a = torch.rand(3)
    set_seed(7)
    assert torch.equal(a, torch.rand(3))
    with pytest.raises(ValueError, match="non-negative int"):
        set_seed(-1)
