"""No text of the repository cites a document the repository does not have.

Read: README.md, the contributing guide beside it (when there is one), docs/*.md,
bench/README.md, and the docstrings (every string statement) and comments of each .py file under
gateway/, tests/ and bench/. Checked:
- every relative Markdown link names a file or directory of the repository, and its `#anchor`,
  if any, a heading of that file (GitHub's anchor rules);
- every mention of a Markdown file names one that exists: relative to the citing file, to the
  root, or to docs/ (so `docs/<name>.md`, `README.md` and, in a listing of docs/, `<name>.md`
  resolve);
- no text names the team's notes, design or style files, which live outside the repository, nor
  cites "the reference" by section number, nor names a `shared/` path the repository lacks;
- every section a text cites by number (`docs/<name>.md section 2.1`, `docs/<name>.md §2.1`, or a
  bare `§2.1` inside that document itself) is the number of a heading of that document.

A failure names the file and line of each citation and what is wrong with it.
"""

from __future__ import annotations

import ast
import functools
import io
import os
import re
import tokenize
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Names of documents kept outside the repository; no text may cite them.
OUTSIDE_DOCUMENTS = ("DESIGN.md", "STYLE.md", "reference/mps-api.md")

_SECTION = r"\d+(?:\.\d+)*"
_MD_PATH = r"(?<![\w./:-])(?P<path>(?:[\w.-]+/)*[\w.-]+\.md)(?![\w-])"
_MD_MENTION = re.compile(_MD_PATH)
_SECTION_CITATION = re.compile(
    _MD_PATH
    + r"[`\])]*,?\s+(?:sections?\s+|§\s*)"
    + rf"(?P<numbers>{_SECTION}(?:\s*(?:,|and|or|to)\s*(?:§\s*)?{_SECTION})*)"
)
_BARE_SECTION = re.compile(rf"§\s*(?P<number>{_SECTION})")
_REFERENCE_BY_NUMBER = re.compile(rf"\breference\s+(?:section\s+|§\s*)?{_SECTION}", re.IGNORECASE)
_SHARED_PATH = re.compile(r"(?P<path>[\w./-]*(?<![\w-])shared/[\w./-]*)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(?P<text>.*?)\s*#*\s*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?(?P<target>[^)\s>]*)>?(?:\s+\"[^\"]*\")?\)"
)
_LINK_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(?P<target>\S+?)>?(?:\s|$)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


@dataclass(frozen=True, slots=True)
class Text:
    """A stretch of prose: a whole Markdown file, one docstring, or one block of comments."""

    path: Path
    #: Line (1-based) of the file on which `body` starts.
    line: int
    body: str
    markdown: bool = False

    def line_of(self, offset: int) -> int:
        return self.line + self.body.count("\n", 0, offset)

    def problem(self, offset: int, what: str) -> Problem:
        """A problem with what this text says at `offset`."""
        return Problem(self.path.as_posix(), self.line_of(offset), what)


class Problem(NamedTuple):
    """A citation that does not hold, where it stands: problems sort by file, then line."""

    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} {self.what}"


def markdown_files(root: Path) -> list[Path]:
    names = ["README.md", "CONTRIBUTING.md", "bench/README.md"]
    found = [root / name for name in names if (root / name).is_file()]
    return found + sorted((root / "docs").glob("*.md"))


def python_files(root: Path) -> list[Path]:
    return sorted(
        path for part in ("gateway", "tests", "bench") for path in (root / part).rglob("*.py")
    )


def python_texts(path: Path, root: Path) -> Iterator[Text]:
    """The docstrings (string statements, wherever they stand) and comment blocks of a module."""
    source = path.read_text(encoding="utf-8")
    relative = path.relative_to(root)
    for node in _statements(ast.parse(source).body):
        if (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            yield Text(relative, node.value.lineno, node.value.value)
    block: list[str] = []
    start = last = 0
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type != tokenize.COMMENT:
            continue
        line = token.start[0]
        if block and line != last + 1:
            yield Text(relative, start, "\n".join(block))
            block = []
        if not block:
            start = line
        block.append(token.string.lstrip("#:").strip())
        last = line
    if block:
        yield Text(relative, start, "\n".join(block))


def _statements(nodes: Iterable[ast.AST]) -> Iterator[ast.AST]:
    """Every statement, however deeply nested (a string statement is never inside an expression)."""
    for node in nodes:
        yield node
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            children = getattr(node, field, None)
            if isinstance(children, list):
                yield from _statements(children)


@functools.cache
def texts(root: Path) -> tuple[Text, ...]:
    """Every text to check under `root`, read once per run."""
    found = [
        Text(path.relative_to(root), 1, path.read_text(encoding="utf-8"), markdown=True)
        for path in markdown_files(root)
    ]
    for path in python_files(root):
        found.extend(python_texts(path, root))
    return tuple(found)


def outside_fences(body: str) -> str:
    """`body` with fenced code blocks blanked out: every other character stays where it was, so
    offsets into the result are offsets into `body`."""
    lines, fenced = [], False
    for line in body.split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
        lines.append(" " * len(line) if fenced or _FENCE.match(line) else line)
    return "\n".join(lines)


def outside_code(body: str) -> str:
    """`body` with fenced code blocks and inline code blanked out, offsets kept."""
    return _INLINE_CODE.sub(lambda match: " " * len(match.group()), outside_fences(body))


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: link text kept, lower case, punctuation dropped (letters,
    digits, `_`, `-` and spaces stay), each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def headings(path: Path) -> list[str]:
    """The text of every ATX heading of a Markdown file, outside code blocks."""
    body = outside_fences(path.read_text(encoding="utf-8"))
    return [match["text"] for line in body.split("\n") if (match := _HEADING.match(line))]


def anchors(path: Path) -> set[str]:
    """Every anchor of a Markdown file; a repeated heading's anchor gets `-1`, `-2`..."""
    seen: Counter[str] = Counter()
    found = set()
    for heading in headings(path):
        anchor = github_anchor(heading)
        found.add(anchor if not seen[anchor] else f"{anchor}-{seen[anchor]}")
        seen[anchor] += 1
    return found


def section_numbers(path: Path) -> set[str]:
    """The numbers headings start with: `## 2. The budget` is 2, `### 2.1 The rule` is 2.1."""
    return {
        match[1]
        for heading in headings(path)
        if (match := re.match(rf"({_SECTION})\.?(?:\s|$)", heading))
    }


def inside(root: Path, path: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def resolve_mention(root: Path, text: Text, mention: str) -> Path | None:
    """The Markdown file a mention names, relative to the citing file, the root or docs/."""
    for base in (root / text.path.parent, root, root / "docs"):
        candidate = base / mention
        if candidate.is_file() and inside(root, candidate):
            return candidate
    return None


def broken_links(root: Path) -> list[Problem]:
    problems: list[Problem] = []
    for text in texts(root):
        if not text.markdown:
            continue
        prose = outside_code(text.body)
        targets = [(m.start(), m["target"]) for m in _LINK.finditer(prose)]
        targets += [
            (offset, match["target"])
            for offset, line in _line_offsets(prose)
            if (match := _LINK_DEFINITION.match(line))
        ]
        for offset, target in targets:
            if not target or _SCHEME.match(target):
                continue
            file_part, _, anchor = target.partition("#")
            linked = (root / text.path.parent / file_part) if file_part else root / text.path
            if not (linked.exists() and inside(root, linked)):
                problems.append(text.problem(offset, f"links to {target}, which does not exist."))
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                problems.append(
                    text.problem(
                        offset,
                        f"links to {target}, but {linked.relative_to(root)} has no heading with "
                        f"the anchor #{anchor}.",
                    )
                )
    return sorted(problems)


def missing_markdown_files(root: Path) -> list[Problem]:
    problems: list[Problem] = []
    for text in texts(root):
        for match in _MD_MENTION.finditer(text.body):
            if resolve_mention(root, text, match["path"]) is None:
                problems.append(
                    text.problem(
                        match.start(),
                        f"mentions {match['path']}, which is not a file of the repository.",
                    )
                )
    return sorted(problems)


def outside_citations(root: Path) -> list[Problem]:
    problems: list[Problem] = []
    repository_paths = list(_repository_paths(root))
    for text in texts(root):
        for name in OUTSIDE_DOCUMENTS:
            for match in re.finditer(re.escape(name), text.body):
                problems.append(
                    text.problem(match.start(), f"names {name}, which is not in the repository.")
                )
        for match in _REFERENCE_BY_NUMBER.finditer(text.body):
            citation = " ".join(match.group().split())
            problems.append(
                text.problem(
                    match.start(),
                    f"cites {citation!r}, a document outside the repository: cite a section of "
                    "docs/ instead.",
                )
            )
        for match in _SHARED_PATH.finditer(text.body):
            path = match["path"].rstrip("./")
            if not any(known == path or known.endswith("/" + path) for known in repository_paths):
                problems.append(
                    text.problem(
                        match.start(),
                        f"names {match['path']}, which is not a path of the repository.",
                    )
                )
    return sorted(problems)


def missing_sections(root: Path) -> list[Problem]:
    problems: list[Problem] = []
    for text in texts(root):
        cited_spans = []
        for match in _SECTION_CITATION.finditer(text.body):
            cited_spans.append(match.span())
            document = resolve_mention(root, text, match["path"])
            if document is None:
                continue  # missing_markdown_files reports it
            numbers = re.findall(_SECTION, match["numbers"])
            problems += _unknown_sections(root, text, match.start(), document, numbers)
        if text.markdown and text.path.parent.as_posix() == "docs":
            for match in _BARE_SECTION.finditer(text.body):
                if not any(start <= match.start() < end for start, end in cited_spans):
                    problems += _unknown_sections(
                        root, text, match.start(), root / text.path, [match["number"]]
                    )
    return sorted(problems)


def _unknown_sections(
    root: Path, text: Text, offset: int, document: Path, numbers: list[str]
) -> list[Problem]:
    known = section_numbers(document)
    return [
        text.problem(
            offset,
            f"cites section {number} of {document.relative_to(root)}, which has no heading "
            f"numbered {number}.",
        )
        for number in numbers
        if number not in known
    ]


def _repository_paths(root: Path) -> Iterator[str]:
    """Every file and directory of the repository, relative to the root (hidden ones, such as
    .git and .venv, and build output left out)."""
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = [
            name
            for name in subdirectories
            if not name.startswith(".") and not name.endswith(".egg-info")
        ]
        base = Path(directory).relative_to(root)
        for name in subdirectories + files:
            yield (base / name).as_posix()


def _line_offsets(body: str) -> Iterator[tuple[int, str]]:
    offset = 0
    for line in body.split("\n"):
        yield offset, line
        offset += len(line) + 1


CHECKS = {
    "links": broken_links,
    "markdown-files": missing_markdown_files,
    "outside-documents": outside_citations,
    "sections": missing_sections,
}


@pytest.mark.parametrize("check", CHECKS)
def test_the_repository_cites_only_what_it_has(check: str) -> None:
    problems = CHECKS[check](ROOT)
    assert not problems, "\n".join(map(str, problems))


# --- the checks themselves, on a repository made up for them -------------------------------------


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text(
        "# Guide\n\n## 1. Start\n\n### 1.2 Then `this`, and [that](#1-start)\n\n## 1. Start\n\n"
        "See §1.2 and §3.\n"
    )
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "shared").mkdir()
    (tmp_path / "gateway").mkdir()
    return tmp_path


def test_anchors_follow_githubs_rules(repository: Path) -> None:
    assert github_anchor("2.1 The completion-time rule") == "21-the-completion-time-rule"
    assert github_anchor("What one request may cost") == "what-one-request-may-cost"
    assert github_anchor("Error codes (`errors[].extensions.code`)") == (
        "error-codes-errorsextensionscode"
    )
    assert anchors(repository / "docs" / "guide.md") == {
        "guide",
        "1-start",
        "12-then-this-and-that",
        "1-start-1",
    }
    assert section_numbers(repository / "docs" / "guide.md") == {"1", "1.2"}


def test_each_check_names_the_file_and_line_of_a_bad_citation(repository: Path) -> None:
    (repository / "README.md").write_text(
        "# Project\n\n"
        "[guide](docs/guide.md#1-start) and [start again](docs/guide.md#1-start-1) are fine;\n"
        "[gone](docs/gone.md), [bad anchor](docs/guide.md#2-later).\n"
        "```\n[in code](nowhere.md)\n```\n"
        "Read docs/guide.md section 1.2, `docs/guide.md` §1 and §2, and docs/guide.md sections 1\n"
        "and 4.1. The package pkg/shared/ and shared/ are ours; ../shared/notes are not.\n"
    )
    (repository / "gateway" / "module.py").write_text(
        '"""A module (see docs/guide.md section 9).\n\nAlso DESIGN.md section 6."""\n\n'
        "# One comment block that cites\n# the reference section 4.2.\n"
        'X = "DESIGN.md in a plain string is data, not prose"\n'
    )

    assert [str(problem) for problem in broken_links(repository)] == [
        "README.md:4 links to docs/gone.md, which does not exist.",
        "README.md:4 links to docs/guide.md#2-later, but docs/guide.md has no heading with the "
        "anchor #2-later.",
    ]
    assert [str(problem) for problem in missing_markdown_files(repository)] == [
        "README.md:4 mentions docs/gone.md, which is not a file of the repository.",
        "README.md:6 mentions nowhere.md, which is not a file of the repository.",
        "gateway/module.py:3 mentions DESIGN.md, which is not a file of the repository.",
    ]
    assert [str(problem) for problem in outside_citations(repository)] == [
        "README.md:9 names ../shared/notes, which is not a path of the repository.",
        "gateway/module.py:3 names DESIGN.md, which is not in the repository.",
        "gateway/module.py:6 cites 'reference section 4.2', a document outside the repository: "
        "cite a section of docs/ instead.",
    ]
    assert [str(problem) for problem in missing_sections(repository)] == [
        "README.md:8 cites section 2 of docs/guide.md, which has no heading numbered 2.",
        "README.md:8 cites section 4.1 of docs/guide.md, which has no heading numbered 4.1.",
        "docs/guide.md:9 cites section 3 of docs/guide.md, which has no heading numbered 3.",
        "gateway/module.py:1 cites section 9 of docs/guide.md, which has no heading numbered 9.",
    ]
