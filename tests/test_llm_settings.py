import asyncio

import pytest

from course_app.fake_openai import LLMSettings, async_client, llm_settings, open_llm
from course_app.runtime import LessonServer, running_servers


def running(name: str) -> LessonServer | None:
    return next((server for server in running_servers() if server.name == name), None)


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
    asyncio.run(client.close())  # not left to the garbage collector (see test_fake_openai)


def test_open_llm_starts_the_fake_server_when_nothing_is_configured() -> None:
    async def run() -> tuple[list[str], bool, str]:
        async with open_llm(name="t-open-llm") as llm:
            assert llm.settings.is_fake
            models = [m.id async for m in llm.client.models.list()]
            fake = running("t-open-llm")
            assert fake is not None and llm.settings.base_url == fake.url + "/v1"
        return models, llm.client.is_closed(), repr(fake)

    models, closed, fake = asyncio.run(run())
    assert models == ["course-mini"]
    assert closed, "the client is closed when the app stops"
    assert fake.endswith("stopped>"), "the fake server stops with the app"


def test_open_llm_uses_given_or_configured_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    async def settings_of(given: LLMSettings | None) -> tuple[LLMSettings, float]:
        async with open_llm(given, name="t-open-llm-unused", timeout=7.0) as llm:
            assert running("t-open-llm-unused") is None, "no fake server"
            return llm.settings, llm.client.timeout  # type: ignore[return-value]

    given = llm_settings("http://127.0.0.1:1234")
    assert asyncio.run(settings_of(given)) == (given, 7.0)
    monkeypatch.setenv("OPENAI_BASE_URL", "https://llm.example/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    chosen, _ = asyncio.run(settings_of(None))
    assert (chosen.base_url, chosen.is_fake) == ("https://llm.example/v1", False)
