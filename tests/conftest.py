import pytest

from shared.resources import fetch


@pytest.fixture(scope="session")
def verdict_text() -> str:
    return fetch("the-verdict").read_text(encoding="utf-8")
