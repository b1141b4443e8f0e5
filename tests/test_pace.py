import asyncio
import time

import pytest

from course_app.runtime import pace


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
    pace.set_pace(0.1)
    assert pace.scaled(10) == 1.0
    pace.set_pace(None)
    assert pace.get_pace() == 0.5


@pytest.mark.parametrize("bad", ["fast", "-1", "nan", "0", "0.001"])
def test_bad_pace_values_get_a_clear_error(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("COURSE_PACE", bad)
    with pytest.raises(ValueError, match="COURSE_PACE must be a number"):
        pace.get_pace()


@pytest.mark.parametrize("bad", [-0.1, 0, 0.01])
def test_set_pace_rejects_values_below_the_tested_pace(bad: float) -> None:
    """Outputs are proven at TEST_PACE; faster would change what lessons print."""
    with pytest.raises(ValueError, match="fastest pace the course is tested at"):
        pace.set_pace(bad)


def test_the_suite_runs_at_the_test_pace() -> None:
    assert pace.get_pace() == pace.TEST_PACE  # the root conftest.py sets it


def test_sleeps_use_the_pace() -> None:
    pace.set_pace(pace.MIN_PACE)
    started = time.perf_counter()
    asyncio.run(pace.sleep(50))
    pace.sleep_sync(50)
    assert time.perf_counter() - started < 50  # 2 s at the minimum pace; 100 s unscaled
