import asyncio
import time

import pytest

from course_app import pace


@pytest.fixture(autouse=True)
def _no_override():
    pace.set_pace(None)
    yield
    pace.set_pace(None)


def test_pace_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COURSE_PACE", "0.5")
    assert pace.get_pace() == 0.5
    assert pace.scaled(2) == 1.0


def test_default_pace_is_human(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COURSE_PACE", raising=False)
    assert pace.get_pace() == 1.0


def test_set_pace_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COURSE_PACE", "0.5")
    pace.set_pace(0)
    assert pace.scaled(10) == 0
    pace.set_pace(None)
    assert pace.get_pace() == 0.5


@pytest.mark.parametrize("bad", ["fast", "-1", "nan"])
def test_bad_pace_values_get_a_clear_error(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("COURSE_PACE", bad)
    with pytest.raises(ValueError, match="COURSE_PACE must be a number"):
        pace.get_pace()


def test_set_pace_rejects_negative() -> None:
    with pytest.raises(ValueError):
        pace.set_pace(-0.1)


def test_sleeps_use_the_pace() -> None:
    pace.set_pace(0)
    started = time.perf_counter()
    asyncio.run(pace.sleep(1000))
    pace.sleep_sync(1000)
    assert time.perf_counter() - started < 100  # would be 2000 s unscaled
