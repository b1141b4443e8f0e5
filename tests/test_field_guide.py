"""FIELD_GUIDE.md: every entry is complete, every link lands on a lesson heading, and
`course guide` finds each entry.

A lesson that renames a heading the guide links to breaks `test_every_link_lands_on_a_heading`
(with the entry, the link and the headings that exist), not the guide in a reader's hands.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import mistune
import pytest

from course_app.checking import field_guide
from course_app.checking.field_guide import (
    Entry,
    GuideFormatError,
    anchor_is_portable,
    heading_anchor,
    heading_text,
    load_guide,
    markdown_headings,
    notebook_anchors,
    notebook_headings,
    parse_guide,
    search,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# The groups issue 23 asks for, in its order: where it hurts.
GROUPS = [
    "Arrives all at once",
    "Dies or reconnects",
    "Never ends",
    "Leaks or keeps billing",
    "Wrong on the wire",
    "Browser client",
    "LLM SDK",
    "AI SDK",
    "Tests",
    "Several workers",
]
ENTRIES = load_guide(ROOT / field_guide.GUIDE_FILE)


def link_problem(entry: Entry, root: Path = ROOT) -> str | None:
    """Why an entry's link does not land on a heading of its lesson, or None."""
    notebook = root / entry.notebook
    if not entry.notebook.startswith("notebooks/") or not notebook.is_file():
        return f"{entry.link}: no notebook {entry.notebook}"
    anchors = notebook_anchors(notebook)
    if entry.anchor not in anchors:
        near = [a for a in anchors if a.split("-")[0] == entry.anchor.split("-")[0]]
        return (
            f"{entry.link}: no heading with that anchor in {entry.notebook} (renamed?); "
            f"headings there: {sorted(anchors)[:40]}{' ... like ' + str(near) if near else ''}"
        )
    if not anchor_is_portable(entry.anchor):
        return (
            f"{entry.link}: JupyterLab and GitHub/nbconvert would give this heading different ids"
        )
    number, _, title = entry.link_text.partition(" · ")
    if not Path(entry.notebook).name.startswith(f"{number}_"):
        return f"{entry.link}: the link text names lesson {number!r}"
    if heading_text(title) != heading_text(anchors[entry.anchor]):
        return (
            f"{entry.link}: the link text says {title!r}, the heading is {anchors[entry.anchor]!r}"
        )
    return None


# --- anchors: the rule JupyterLab and nbconvert follow ---------------------------------


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Recap", "Recap"),
        ("1. A reverse proxy in front of the stream", "1.-A-reverse-proxy-in-front-of-the-stream"),
        (
            "`await asyncio.sleep` vs `time.sleep`: the stalled event loop",
            "await-asyncio.sleep-vs-time.sleep:-the-stalled-event-loop",
        ),
        ("The proxy's read timeout", "The-proxy's-read-timeout"),
        ("Past one process: `uvicorn --workers 2`", "Past-one-process:-uvicorn---workers-2"),
        ("Frozen clients: `send_timeout`", "Frozen-clients:-send_timeout"),
        ("How fast? Measured", "How-fast?-Measured"),
        ("**Bold**, *em* and [a link](x.md)", "Bold,-em-and-a-link"),
        ("`a  b` stays verbatim", "a--b-stays-verbatim"),
        ("Tom &amp; Jerry \\*not em\\*", "Tom-&-Jerry-*not-em*"),
        ("snake_case_names stay", "snake_case_names-stay"),
    ],
)
def test_heading_anchor_keeps_case_and_punctuation_and_turns_each_space_into_a_dash(
    heading: str, anchor: str
) -> None:
    assert heading_anchor(heading) == anchor


def test_anchors_that_jupyterlab_and_nbconvert_spell_differently_are_not_portable() -> None:
    assert anchor_is_portable("The-proxy's-read-timeout:-(a),-b?")
    assert not anchor_is_portable('The-"small-buffer"')  # nbconvert writes %22
    assert not anchor_is_portable("00-·-Welcome")  # non-ASCII is percent-encoded too
    assert not anchor_is_portable("kind=value")  # JupyterLab reads #kind=value as typed
    assert not anchor_is_portable("")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem[:2])
def test_heading_text_is_what_a_markdown_renderer_shows(notebook: Path) -> None:
    """For every heading of the course, our anchor equals the rendered heading's text with
    spaces replaced (JupyterLab's createHeaderId), rendered here by mistune."""
    for heading in notebook_headings(notebook):
        rendered = mistune.html(f"## {heading}\n")
        text = html.unescape(re.sub(r"<[^>]+>", "", rendered)).strip()
        assert heading_anchor(heading) == text.replace(" ", "-"), heading


def test_headings_inside_code_fences_are_not_headings() -> None:
    source = "# Title\n```python\n# a comment\n```\n~~~\n## not either\n~~~\n### Real one\n"
    assert markdown_headings(source) == [(1, "Title"), (3, "Real one")]


# --- the guide itself ------------------------------------------------------------------


def test_the_guide_covers_at_least_40_distinct_symptoms() -> None:
    symptoms = [entry.symptom.casefold() for entry in ENTRIES]
    assert len(symptoms) >= 40, len(symptoms)
    duplicates = sorted({s for s in symptoms if symptoms.count(s) > 1})
    assert duplicates == []


def test_the_groups_are_the_issues_groups_in_order_and_none_is_empty() -> None:
    assert [group for group, _ in field_guide.group_counts(ENTRIES)] == GROUPS


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda entry: entry.symptom[:60])
def test_every_entry_has_every_field(entry: Entry) -> None:
    for name in ("group", "symptom", "error", "cause", "fix", "link_text", "link"):
        assert getattr(entry, name).strip(), f"{entry.symptom!r} has an empty {name}"


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda entry: entry.symptom[:60])
def test_every_link_lands_on_a_heading(entry: Entry) -> None:
    assert link_problem(entry) is None, link_problem(entry)


def test_each_linked_heading_is_the_only_one_with_its_anchor() -> None:
    ambiguous = []
    for notebook, anchor in {(entry.notebook, entry.anchor) for entry in ENTRIES}:
        anchors = [heading_anchor(text) for text in notebook_headings(ROOT / notebook)]
        if anchors.count(anchor) != 1:
            ambiguous.append(f"{notebook}#{anchor}")
    assert ambiguous == []


def test_a_renamed_heading_breaks_the_link(tmp_path: Path) -> None:
    entry = next(e for e in ENTRIES if e.notebook == "notebooks/12_production.ipynb")
    notebook = json.loads((ROOT / entry.notebook).read_text(encoding="utf-8"))
    old = field_guide.notebook_anchors(ROOT / entry.notebook)[entry.anchor]
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            cell["source"] = [line.replace(old, old + " (renamed)") for line in cell["source"]]
    (tmp_path / "notebooks").mkdir()
    (tmp_path / entry.notebook).write_text(json.dumps(notebook), encoding="utf-8")
    problem = link_problem(entry, tmp_path)
    assert problem is not None and "renamed?" in problem, problem


# --- parsing: a malformed guide says where ---------------------------------------------

GOOD = """# Guide

Intro text, not parsed.

## Tests

### My test hangs
- **You see:** nothing
- **Cause:** `response.text` reads
  the whole body.
- **Fix:** `client.stream`
- **Shown in:** [11 · Why the naive tests hang](notebooks/11_testing_streams.ipynb#Why-the-naive-tests-hang)
"""


def test_a_field_may_wrap_onto_indented_lines() -> None:
    (entry,) = parse_guide(GOOD)
    assert entry.cause == "`response.text` reads the whole body."
    assert entry.anchor == "Why-the-naive-tests-hang"
    assert entry.link_text == "11 · Why the naive tests hang"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("- **Fix:** `client.stream`\n", ""), "missing or empty field.*Fix"),
        (("- **Fix:**", "- **Solution:**"), "unknown field 'Solution'"),
        (("[11 · Why the naive tests hang](", "11 · Why the naive tests hang ("), "one \\[text\\]"),
        (("  the whole body.", "the whole body."), "expected a '- \\*\\*Field"),
        (("## Tests\n", ""), "a symptom before any group"),
    ],
)
def test_a_malformed_guide_is_refused_with_the_place(change: tuple[str, str], message: str) -> None:
    with pytest.raises(GuideFormatError, match=message):
        parse_guide(GOOD.replace(*change))


# --- search and `course guide` ---------------------------------------------------------


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda entry: entry.symptom[:60])
def test_search_finds_each_entry_from_any_single_word_of_its_symptom(entry: Entry) -> None:
    for word in re.findall(r"[\w.'-]+", entry.symptom):
        assert entry in search([word.upper()], ENTRIES), word


def test_search_needs_every_word_and_takes_phrases_as_they_are() -> None:
    timeout = [e for e in ENTRIES if e.anchor == "The-proxy's-read-timeout"]
    assert search(["nginx", "upstream timed out"], ENTRIES) == timeout
    assert search(["nginx", "no-such-word-anywhere"], ENTRIES) == []
    assert search(["timed upstream out"], ENTRIES) == []  # a phrase is not a bag of words
    assert search([], ENTRIES) == ENTRIES


def test_course_guide_prints_matching_entries_with_their_links(capsys) -> None:
    assert field_guide.main(["already", "STARTED"]) == 0
    out = capsys.readouterr().out
    assert "Caught handled exception, but response already started" in out
    assert "cause:" in out and "fix:" in out
    assert "notebooks/06_errors_in_streams.ipynb#Fail-early,-with-a-real-status" in out
    assert "1 of " in out


def test_course_guide_without_words_lists_the_groups_with_counts(capsys) -> None:
    assert field_guide.main([]) == 0
    out = capsys.readouterr().out
    for group, count in field_guide.group_counts(ENTRIES):
        assert re.search(rf"^  {re.escape(group)}\s+{count}$", out, re.MULTILINE), group


def test_course_guide_says_so_when_nothing_matches(capsys) -> None:
    assert field_guide.main(["no-such-symptom-anywhere"]) == 1
    assert "No entry of the field guide matches" in capsys.readouterr().out
