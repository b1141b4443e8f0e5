import pytest

from course_app.fake_openai import async_client, llm_settings


@pytest.fixture(autouse=True)
def _no_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_to_the_fake_server() -> None:
    settings = llm_settings("http://127.0.0.1:1234/")
    assert settings.base_url == "http://127.0.0.1:1234/v1"
    assert (settings.api_key, settings.model, settings.is_fake) == ("course", "course-mini", True)


def test_environment_switches_to_a_real_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "https://llm.example/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    settings = llm_settings("http://127.0.0.1:1234")
    assert settings.base_url == "https://llm.example/v1"
    assert not settings.is_fake
    assert "sk-secret" not in repr(settings)
    monkeypatch.setenv("OPENAI_MODEL", "my-model")
    assert llm_settings().model == "my-model"


def test_base_url_without_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "https://llm.example/v1")
    with pytest.raises(ValueError, match="set both"):
        llm_settings()


def test_nothing_configured_is_a_clear_error() -> None:
    with pytest.raises(LookupError, match="fake server"):
        llm_settings()


def test_async_client_uses_the_settings() -> None:
    client = async_client(llm_settings("http://127.0.0.1:1234"))
    assert str(client.base_url) == "http://127.0.0.1:1234/v1/"
    assert client.max_retries == 0
