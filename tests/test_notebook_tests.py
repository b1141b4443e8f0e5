"""course_app.checking.notebook_tests: verdicts per test, fixtures by name, never an exception."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Any

import pytest

from course_app.checking import run_in_notebook, run_pytest


def test_run_passes_fixtures_by_name_and_prints_one_verdict_per_test(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: list[tuple[int, str]] = []

    def test_sees_its_fixtures(number: int, word: str) -> None:
        seen.append((number, word))

    def test_without_fixtures() -> None:
        """the label is the docstring's first line

        Not this paragraph.
        """

    run_in_notebook(test_sees_its_fixtures, test_without_fixtures, word="hi", number=3, unused=None)
    assert seen == [(3, "hi")]
    assert capsys.readouterr().out.splitlines() == [
        "  PASS  test_sees_its_fixtures",
        "  PASS  the label is the docstring's first line",
    ]


def cell(source: str, folder: Path) -> dict[str, Any]:
    """Define functions as a notebook cell would: no assertion rewriting, source in linecache."""
    path = folder / "cell.py"
    path.write_text(inspect.cleandoc(source) + "\n")
    namespace: dict[str, Any] = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace


def test_run_reports_failures_and_goes_on(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    tests = cell(
        """
        import pytest

        def test_bare_assert():
            got = 1
            assert got == 2

        def test_assert_with_message():
            assert [1] == [2], [1]

        def test_raises():
            raise KeyError("price")

        def test_needs_a_fixture(client):
            pass

        def test_expects_an_error():
            with pytest.raises(KeyError):
                pass

        def test_skips():
            pytest.skip("not on this machine")

        def test_last():
            pass
        """,
        tmp_path,
    )
    run_in_notebook(*(tests[name] for name in tests if name.startswith("test_")))
    assert capsys.readouterr().out.splitlines() == [
        "  FAIL  test_bare_assert",
        "        AssertionError at `assert got == 2`",
        "  FAIL  test_assert_with_message",
        "        AssertionError: [1]",
        "  FAIL  test_raises",
        "        KeyError: 'price'",
        "  FAIL  test_needs_a_fixture",
        "        no fixture named client",
        "  FAIL  test_expects_an_error",
        "        Failed: DID NOT RAISE KeyError",
        "  SKIP  test_skips",
        "        not on this machine",
        "  PASS  test_last",
    ]


def test_run_runs_async_tests_on_a_loop_of_their_own(capsys: pytest.CaptureFixture[str]) -> None:
    async def test_async(delay: float) -> None:
        await asyncio.sleep(delay)
        assert delay == 0

    async def main() -> None:  # as in a notebook: a loop already runs on this thread
        run_in_notebook(test_async, delay=0)

    asyncio.run(main())
    assert capsys.readouterr().out.splitlines() == ["  PASS  test_async"]


def test_run_shows_the_example_hypothesis_found(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    tests = cell(
        """
        from hypothesis import given, settings, strategies as st

        @settings(database=None, derandomize=True)
        @given(st.integers())
        def test_small(n):
            assert n < 10
        """,
        tmp_path,
    )
    run_in_notebook(tests["test_small"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["  FAIL  test_small", "        AssertionError at `assert n < 10`"]
    assert any("n=10" in line for line in lines[2:]), lines


def test_run_pytest_runs_a_module_given_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    run_pytest(
        """
        import pytest

        def test_passes():
            assert True

        @pytest.mark.anyio
        async def test_async_with_the_anyio_plugin():
            '''async tests run with @pytest.mark.anyio'''

        def test_fails():
            assert [1, 2] == [1, 3]
        """
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == [
        "  PASS  test_passes",
        "  PASS  async tests run with @pytest.mark.anyio [asyncio]",
        "  FAIL  test_fails",
    ]
    assert lines[3] == "        assert [1, 2] == [1, 3]"
