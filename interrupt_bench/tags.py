"""The tag grammar of docs/protocol.md, parsed leniently and without ever raising.

Model side: ``<thinking task=k>…</thinking>`` and ``<answer task=k>…</answer>``. Tag and
attribute names are case-insensitive, the value may be bare or quoted, whitespace is
free inside the tag, and a ``<`` followed by whitespace is plain text. Any complete
opening tag is an *attempt*; an answer counts as an *answer* only when closed."""

from __future__ import annotations

import re
from dataclasses import dataclass

TAG_NAMES = ("thinking", "answer")
_TAG = re.compile(r"<(/?)(thinking|answer)\b([^<>]*)>", re.IGNORECASE)
_TASK_ATTR = re.compile(
    r"[ \t\r\n]+task[ \t\r\n]*=[ \t\r\n]*(?:\"([^\"<>]*)\"|'([^'<>]*)'|([^\s\"'<>=]+))[ \t\r\n]*",
    re.IGNORECASE,
)
_TASK_ID = re.compile(r"[0-9]{1,9}")  # ASCII digits only: task ids are the numbers 1..n
# A tag cut by the budget: '<' then a non-space, and no '>' before the end of the text.
_PARTIAL_TAG = re.compile(r"<(/?)([A-Za-z]*)[^<>\s]?[^<>]*\Z")


@dataclass(frozen=True)
class TagSpan:
    """One thinking or answer element as the model wrote it."""

    kind: str  # "thinking" or "answer"
    task_id: int | None  # None when the task attribute is missing or not an integer
    content: str
    closed: bool
    start: int

    @property
    def is_answer(self) -> bool:
        """A closed answer: what accuracy, answer_rate and resumption_rate count."""
        return self.kind == "answer" and self.closed


@dataclass(frozen=True)
class ParsedTurn:
    spans: tuple[TagSpan, ...]
    problems: tuple[str, ...]  # why the turn is malformed; empty when well-formed

    @property
    def well_formed(self) -> bool:
        return not self.problems

    def attempted(self) -> set[int]:
        return {s.task_id for s in self.spans if s.task_id is not None}

    def answers(self) -> list[tuple[int, str]]:
        """Closed answers in the order written."""
        return [(s.task_id, s.content) for s in self.spans if s.is_answer and s.task_id is not None]


def _task_id(attrs: str) -> tuple[int | None, str | None]:
    """(task id, problem) for the attribute text of an opening tag."""
    match = _TASK_ATTR.fullmatch(attrs)
    if not match:
        return None, "missing or unreadable task attribute"
    value = next(g for g in match.groups() if g is not None)
    if not _TASK_ID.fullmatch(value):
        return None, f"task id {value[:20]!r} is not an integer"
    return int(value), None


def _is_tag_prefix(name: str) -> bool:
    name = name.lower()
    return bool(name) and any(t.startswith(name) or name.startswith(t) for t in TAG_NAMES)


def parse_turn(text: str, cut: bool = True) -> ParsedTurn:
    """Parse one assistant turn.

    ``cut`` says whether the budget stopped the turn; only then may it end inside a
    thinking element or a half-written tag without being malformed. Unknown → True."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    spans: list[TagSpan] = []
    problems: list[str] = []
    end = len(text)
    partial = _PARTIAL_TAG.search(text)
    if partial and _is_tag_prefix(partial.group(2)):
        end = partial.start()
        if not cut:
            problems.append("turn ends inside a tag but was not cut")
    open_tag: tuple[str, int | None, int, int] | None = None  # kind, id, content start, start

    def close(stop: int, closed: bool) -> None:
        kind, task_id, content_start, start = open_tag
        spans.append(TagSpan(kind, task_id, text[content_start:stop], closed, start))

    for match in _TAG.finditer(text, 0, end):
        is_close, kind, attrs = match.group(1), match.group(2).lower(), match.group(3)
        if is_close:
            if attrs.strip():  # `</answer task=1>` is malformed and closes nothing
                problems.append(f"closing tag </{kind}> has attributes and closes nothing")
                continue
            if open_tag is not None and open_tag[0] == kind:
                close(match.start(), closed=True)
                open_tag = None
            else:
                problems.append(f"</{kind}> closes nothing")
            continue
        if open_tag is not None:
            problems.append(f"<{open_tag[0]} task={open_tag[1]}> is not closed before the next tag")
            close(match.start(), closed=False)
        task_id, problem = _task_id(attrs)
        if problem:
            problems.append(f"<{kind}>: {problem}")
        open_tag = (kind, task_id, match.end(), match.start())
    if open_tag is not None:
        if not (cut and open_tag[0] == "thinking"):
            problems.append(f"<{open_tag[0]} task={open_tag[1]}> is not closed")
        close(end, closed=False)
    return ParsedTurn(tuple(spans), tuple(problems))
