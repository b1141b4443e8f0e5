import pytest

from course_app.checking import StubMarkerError, make_stub

SOLUTION = '''def double(x: int) -> int:
    """Twice x."""
    # TODO: return x doubled.
    ### BEGIN SOLUTION
    return 2 * x
    ### END SOLUTION


def names() -> list[str]:
    ### BEGIN SOLUTION
    ### STUB: return []
    return ["a"]
    ### END SOLUTION
'''


def test_block_becomes_not_implemented_naming_the_function() -> None:
    stub = make_stub(SOLUTION)
    assert '    raise NotImplementedError("TODO: write double()")\n' in stub
    assert "return 2 * x" not in stub
    assert "# TODO: return x doubled." in stub


def test_stub_lines_replace_the_default() -> None:
    stub = make_stub(SOLUTION)
    assert "    return []\n" in stub
    assert 'return ["a"]' not in stub


def test_stub_is_valid_python() -> None:
    compile(make_stub(SOLUTION), "stub.py", "exec")


@pytest.mark.parametrize(
    "text",
    ["### BEGIN SOLUTION\n", "### END SOLUTION\n", "### BEGIN SOLUTION\n### BEGIN SOLUTION\n"],
)
def test_unbalanced_markers_are_reported(text: str) -> None:
    with pytest.raises(StubMarkerError):
        make_stub(text)


def test_a_generators_stub_stays_a_generator() -> None:
    solution = "async def ticks():\n    ### BEGIN SOLUTION\n    yield 1\n    ### END SOLUTION\n"
    namespace: dict = {}
    exec(make_stub(solution), namespace)
    import inspect

    assert inspect.isasyncgenfunction(namespace["ticks"])
