"""The field guide: from what people see to the notebook cell that shows the fix.

``FIELD_GUIDE.md`` is written for people (and for GitHub and JupyterLab to render); this
module reads it back into entries, so that ``course guide [words]`` can search it in a
terminal and the tests can prove that every link still lands on a heading.

The guide's shape, which :func:`parse_guide` enforces::

    ## Group title                      (where it hurts)

    ### The symptom, as people say it
    - **You see:** the exact error or log text, or what is observed when there is none
    - **Cause:** one line
    - **Fix:** one line
    - **Shown in:** [NN · heading text](notebooks/NN_slug.ipynb#Heading-anchor)

A field may wrap onto indented continuation lines. Text before the first ``##`` heading is
the guide's introduction and is not parsed.

Heading anchors follow JupyterLab (``createHeaderId`` in ``@jupyterlab/rendermime``: the
heading's rendered text with every space replaced by ``-``, case and punctuation kept) and
nbconvert's HTML export (``_convert_header_id``: the same, then percent-encoded where a URL
fragment needs it). The guide links only anchors on which both agree: no character that
nbconvert would encode, and no ``=`` (JupyterLab reads ``#kind=value`` as a typed fragment).
"""

from __future__ import annotations

import html
import json
import re
import sys
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from course_app.runtime import course_root

GUIDE_FILE = "FIELD_GUIDE.md"

# Field labels as written in the guide, and the Entry attribute each one fills.
FIELD_LABELS = {"You see": "error", "Cause": "cause", "Fix": "fix", "Shown in": "link_markdown"}

# What nbconvert's _convert_header_id leaves unencoded besides letters, digits and "_.-~".
NBCONVERT_SAFE = "?/:@!$&'()*+,;="

_FIELD_LINE = re.compile(r"^- \*\*(?P<label>[^*]+):\*\*\s*(?P<text>.*)$")
_LINK = re.compile(r"^\[(?P<text>[^\]]+)\]\((?P<target>[^)\s]+)\)$")
_HEADING = re.compile(r"^(?P<hashes>#{1,6})\s+(?P<text>.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")


class GuideFormatError(ValueError):
    """FIELD_GUIDE.md does not have the shape this module reads (the message says where)."""


@dataclass(frozen=True)
class Entry:
    """One symptom of the guide, with where it hurts, what is seen, why, and the fix."""

    group: str
    symptom: str
    error: str
    cause: str
    fix: str
    link_text: str  # "12 · 1. A reverse proxy in front of the stream"
    link: str  # "notebooks/12_production.ipynb#1.-A-reverse-proxy-in-front-of-the-stream"

    @property
    def notebook(self) -> str:
        """The linked notebook's path, relative to the course folder."""
        return self.link.partition("#")[0]

    @property
    def anchor(self) -> str:
        """The heading anchor the link points to (without ``#``)."""
        return self.link.partition("#")[2]

    def searchable(self) -> str:
        """Every field in one case-folded string, for :func:`search`."""
        fields = (self.group, self.symptom, self.error, self.cause, self.fix, self.link_text)
        return " ".join((*fields, self.link)).casefold()


def heading_text(markdown: str) -> str:
    """The text a Markdown renderer shows for a heading's inline Markdown.

    Covers what headings use: code spans (their content, verbatim), emphasis markers,
    links and images (their text), HTML tags (dropped), entities and backslash escapes.
    """
    pieces: list[str] = []
    # Code spans first: nothing inside them is Markdown.
    for index, part in enumerate(re.split(r"(`+)(.+?)\1", markdown)):
        kind = index % 3
        if kind == 1:  # the run of backticks that opened a code span
            continue
        if kind == 2:  # a code span's content: one leading and trailing space are stripped
            stripped = part[1:-1] if part.startswith(" ") and part.endswith(" ") else part
            pieces.append(stripped if stripped.strip() else part)
            continue
        # Backslash escapes first, parked in private-use characters: `\*` is no emphasis.
        text = re.sub(r"\\([!-/:-@\[-`{-~])", lambda m: chr(0xE000 + ord(m[1])), part)
        text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links and images
        text = re.sub(r"<[^>]+>", "", text)  # inline HTML
        text = re.sub(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1", r"\2", text)  # strong
        text = re.sub(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])", r"\1", text)  # *em*
        text = re.sub(r"(?<![\w_])_(?=\S)(.+?)(?<=\S)_(?![\w_])", r"\1", text)  # _em_
        text = re.sub("[\ue021-\ue07e]", lambda m: chr(ord(m[0]) - 0xE000), text)
        pieces.append(html.unescape(text))
    return "".join(pieces).strip()


def heading_anchor(markdown: str) -> str:
    """The anchor JupyterLab gives a heading: its rendered text, each space a ``-``."""
    return heading_text(markdown).replace(" ", "-")


def anchor_is_portable(anchor: str) -> bool:
    """True when JupyterLab and nbconvert (GitHub, nbviewer) give the heading the same id."""
    return bool(anchor) and "=" not in anchor and quote(anchor, safe=NBCONVERT_SAFE) == anchor


def markdown_headings(source: str) -> list[tuple[int, str]]:
    """(level, inline Markdown) of each ATX heading of a Markdown text, outside code fences."""
    headings: list[tuple[int, str]] = []
    fence: str | None = None
    for line in source.splitlines():
        opening = _FENCE.match(line)
        if fence is not None:
            if opening and opening.group(1) == fence:
                fence = None
            continue
        if opening:
            fence = opening.group(1)
            continue
        if match := _HEADING.match(line):
            headings.append((len(match["hashes"]), match["text"]))
    return headings


def notebook_headings(path: Path) -> list[str]:
    """The inline Markdown of every heading in a notebook's Markdown cells, in order."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    return [
        text
        for cell in notebook["cells"]
        if cell["cell_type"] == "markdown"
        for _, text in markdown_headings("".join(cell["source"]))
    ]


def notebook_anchors(path: Path) -> dict[str, str]:
    """Anchor -> heading Markdown for a notebook (the first heading wins, as in a browser)."""
    anchors: dict[str, str] = {}
    for text in notebook_headings(path):
        anchors.setdefault(heading_anchor(text), text)
    return anchors


def _parse_link(markdown: str, where: str) -> tuple[str, str]:
    match = _LINK.match(markdown.strip())
    if not match:
        raise GuideFormatError(f"{where}: 'Shown in' must be one [text](target) link")
    return match["text"], match["target"]


def _entry(group: str, symptom: str, fields: dict[str, str], line: int) -> Entry:
    where = f"{GUIDE_FILE} line {line} ({symptom!r})"
    missing = [label for label, name in FIELD_LABELS.items() if not fields.get(name)]
    if missing:
        raise GuideFormatError(f"{where}: missing or empty field(s): {', '.join(missing)}")
    link_text, link = _parse_link(fields["link_markdown"], where)
    return Entry(
        group=group,
        symptom=symptom,
        error=fields["error"],
        cause=fields["cause"],
        fix=fields["fix"],
        link_text=link_text,
        link=link,
    )


def parse_guide(text: str) -> list[Entry]:
    """The entries of a field guide in the shape described in this module's docstring."""
    entries: list[Entry] = []
    group: str | None = None
    symptom: str | None = None
    symptom_line = 0
    fields: dict[str, str] = {}
    current: str | None = None  # the field a continuation line belongs to

    def finish() -> None:
        if symptom is not None:
            assert group is not None  # an entry is only started inside a group
            entries.append(_entry(group, symptom, fields, symptom_line))

    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("## "):
            finish()
            group, symptom, fields, current = line[3:].strip(), None, {}, None
        elif line.startswith("### "):
            finish()
            if group is None:
                raise GuideFormatError(f"{GUIDE_FILE} line {number}: a symptom before any group")
            symptom, symptom_line, fields, current = line[4:].strip(), number, {}, None
        elif symptom is None:
            continue  # the introduction, or a group's own text
        elif match := _FIELD_LINE.match(line):
            label = match["label"].strip()
            if label not in FIELD_LABELS:
                known = ", ".join(FIELD_LABELS)
                raise GuideFormatError(
                    f"{GUIDE_FILE} line {number}: unknown field {label!r} (known: {known})"
                )
            current = FIELD_LABELS[label]
            if current in fields:
                raise GuideFormatError(f"{GUIDE_FILE} line {number}: {label!r} given twice")
            fields[current] = match["text"].strip()
        elif line.strip() and current is not None and line.startswith(" "):
            fields[current] = f"{fields[current]} {line.strip()}".strip()
        elif line.strip():
            raise GuideFormatError(
                f"{GUIDE_FILE} line {number}: expected a '- **Field:** ...' line or an "
                f"indented continuation, got {line.strip()[:40]!r}"
            )
    finish()
    return entries


def load_guide(path: Path | None = None) -> list[Entry]:
    """The entries of the course's FIELD_GUIDE.md (or of the guide at ``path``)."""
    path = path or course_root() / GUIDE_FILE
    return parse_guide(path.read_text(encoding="utf-8"))


def search(words: Sequence[str], entries: Iterable[Entry] | None = None) -> list[Entry]:
    """The entries in which every word occurs, ignoring case, in any field.

    A word may be a phrase (``"response already started"``): it must occur as it is. With
    no words, every entry matches; ``main`` shows the groups instead.
    """
    wanted = [word.casefold().strip() for word in words if word.strip()]
    pool = load_guide() if entries is None else list(entries)
    return [entry for entry in pool if all(word in entry.searchable() for word in wanted)]


def group_counts(entries: Iterable[Entry]) -> list[tuple[str, int]]:
    """Each group's title and its number of entries, in the guide's order."""
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry.group] = counts.get(entry.group, 0) + 1
    return list(counts.items())


def _plain(text: str) -> str:
    """Guide Markdown for a terminal: no bold markers; code spans keep their backticks."""
    return text.replace("**", "")


def render(entry: Entry, width: int = 100) -> str:
    """An entry as a terminal shows it."""
    lines = [f"{_plain(entry.symptom)}  [{entry.group}]"]
    for label, text in [
        ("you see", entry.error),
        ("cause", entry.cause),
        ("fix", entry.fix),
    ]:
        lines.append(
            textwrap.fill(
                _plain(text),
                width=width,
                initial_indent=f"  {label + ':':<10}",
                subsequent_indent=" " * 12,
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    # The link whole, on a line of its own, so that a terminal can open it.
    lines.append(f"  {'shown in:':<10}{entry.link}")
    lines.append(f"{'':12}({_plain(entry.link_text)})")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    """``course guide [words]``: the entries that match every word, or the groups.

    Exit status 0 when something matched (or no words were given), 1 when nothing did.
    """
    entries = load_guide()
    if not any(word.strip() for word in argv):
        print(f"The field guide ({GUIDE_FILE}): {len(entries)} symptoms, by where it hurts:")
        for group, count in group_counts(entries):
            print(f"  {group:<28} {count:>3}")
        print(
            'Search it: course guide WORDS...   e.g. course guide nginx, course guide "already started"'
        )
        return 0
    found = search(argv, entries)
    if not found:
        words = " ".join(argv)
        print(f"No entry of the field guide matches {words!r}. Try fewer or shorter words,")
        print("or `course guide` alone for the groups.")
        return 1
    print("\n\n".join(render(entry) for entry in found))
    print(
        f"\n{len(found)} of {len(entries)} entries match. Open a link in JupyterLab or on GitHub."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
