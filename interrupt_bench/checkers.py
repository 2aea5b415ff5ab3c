"""Answer checkers, looked up by the name a task stores.

Lenient where a person grading by hand would be (case, accents, surrounding
punctuation and quotes, articles, "10.49" vs "10.490", "2, 5, 9" vs "[2 5 9]") and
strict where it matters: a different number, word or order is wrong."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from interrupt_bench.tasks import Task

_EDGE_PUNCT = "\"'`“”‘’«»„‚.,!?;:()[]{}<>*_ \t\r\n"
_LEAD_PUNCT = _EDGE_PUNCT.replace(".", "")
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|[-+]?\.\d+")
_LEAD_IN = re.compile(
    r"^(?:the\s+(?:final\s+)?answer\s+is|answer\s*:|result\s*:|approximately|approx\.?|about|"
    r"roughly|around|≈|~|=)\s*",
    re.IGNORECASE,
)
_ARTICLES = {
    "en": ("the ", "a ", "an ", "to "),
    "fr": ("le ", "la ", "les ", "l'", "l’", "un ", "une ", "des "),
    "es": ("el ", "la ", "los ", "las ", "un ", "una ", "unos ", "unas "),
    "de": ("der ", "die ", "das ", "den ", "dem ", "ein ", "eine ", "einen "),
}
_SEPARATORS = re.compile(r"(?:\s*[,;|]\s*|\s+and\s+|\s+)", re.IGNORECASE)


def _fold(text: str) -> str:
    """Unicode-normalise, casefold and drop accents ("Café" == "cafe", "ß" == "ss")."""
    text = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in text if not unicodedata.combining(ch))


def _strip_edges(text: str) -> str:
    return " ".join(text.strip(_EDGE_PUNCT).split())


def parse_number(text: str) -> float | None:
    """The one number a short answer states, or None when it states none or is unclear.

    Accepts "12", "12.0", " 1,234 ", "−5", "= 10.49", "approximately 10.49", "15%",
    and "7 + 5 = 12" (the part after the last "="). Rejects "12 or 13"."""
    text = text.replace("−", "-").replace("–", "-").strip()
    if "=" in text:
        text = text.rsplit("=", 1)[1]
    for _ in range(2):
        text = _LEAD_IN.sub("", text.strip().lstrip(_LEAD_PUNCT)).strip()
    text = text.rstrip(_EDGE_PUNCT).rstrip("%").rstrip(_EDGE_PUNCT).lstrip(_LEAD_PUNCT)
    if not _NUMBER.fullmatch(text):
        return None
    try:
        value = float(text.replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def check_number(task: Task, response: str) -> bool:
    got = parse_number(response)
    want = parse_number(task.answer)
    if got is None or want is None:
        return False
    return abs(got - want) <= task.tolerance + 1e-9 * max(1.0, abs(want))


def normalise_text(text: str, language: str = "en") -> str:
    """Fold case and accents, trim punctuation and quotes, drop one leading article."""
    text = _fold(_strip_edges(text))
    for article in _ARTICLES.get(language, ()):
        folded = _fold(article)
        if text.startswith(folded) and len(text) > len(folded):
            text = text[len(folded) :].strip()
            break
    return text.replace("ß", "ss")


def check_text(task: Task, response: str) -> bool:
    got = normalise_text(response, task.target_language)
    if not got:
        return False
    options = (task.answer, *task.accepted)
    return any(got == normalise_text(option, task.target_language) for option in options)


def split_items(text: str) -> list[str]:
    """Items of a list answer: brackets dropped, split on spaces, commas, semicolons, "and"."""
    text = text.strip().strip("[](){}").strip()
    return [item.strip(_EDGE_PUNCT) for item in _SEPARATORS.split(text) if item.strip(_EDGE_PUNCT)]


def _same_item(got: str, want: str) -> bool:
    got_num, want_num = parse_number(got), parse_number(want)
    if want_num is not None:
        return got_num is not None and got_num == want_num
    return _fold(got) == _fold(want)


def check_sequence(task: Task, response: str) -> bool:
    got, want = split_items(response), split_items(task.answer)
    return len(got) == len(want) and all(_same_item(g, w) for g, w in zip(got, want))


CHECKERS: dict[str, Callable[[Task, str], bool]] = {
    "number": check_number,
    "text": check_text,
    "sequence": check_sequence,
}


def check(task: Task, response: str) -> bool:
    """True when ``response`` answers ``task`` correctly. Never raises on any string."""
    try:
        fn = CHECKERS[task.checker]
    except KeyError:
        raise ValueError(
            f"task uses unknown checker {task.checker!r}; known: {', '.join(CHECKERS)}"
        ) from None
    return bool(fn(task, response))


# --- The flexible filter's extractors: an answer stated without tags --------------------
# Each takes the task (for the shape of its answer, never its value) and the untagged text
# of the task's own turn, and returns the candidate answer or None.

_LIST = re.compile(r"[\w'’-]+(?:\s*,\s*(?:and\s+)?[\w'’-]+)+", re.IGNORECASE)
_BULLET = re.compile(r"^[ \t]*(?:[-*•]|\d+[.)])[ \t]+(\S.*?)\s*$")
_AFTER = re.compile(r":|\bis\b|\bmeans\b", re.IGNORECASE)
_QUOTED = re.compile(
    r'"([^"\n]{1,60})"|“([^”\n]{1,60})”|«\s*([^»\n]{1,60}?)\s*»|\*\*([^*\n]{1,60})\*\*'
)


def _number_spans(task: Task, text: str) -> list[tuple[str, int, int]]:
    return [
        (m.group(0).rstrip("."), m.start(), m.end())
        for m in _NUMBER.finditer(text.replace("−", "-"))  # same length: spans stay put
    ]


def extract_number(task: Task, text: str) -> str | None:
    """Math: the last number in the text ("49 ÷ 3 = 16.33" -> "16.33")."""
    spans = _number_spans(task, text)
    return spans[-1][0] if spans else None


def _bullet_lists(text: str) -> list[tuple[int, int, str]]:
    """Runs of consecutive bulleted or numbered lines ("- a", "2. b"): (start, end, "a, b")."""
    runs: list[tuple[int, int, list[str]]] = []
    offset, previous = 0, False
    for line in text.splitlines(keepends=True):
        match = _BULLET.match(line)
        if match and previous:
            runs[-1] = (runs[-1][0], offset + match.end(1), [*runs[-1][2], match.group(1)])
        elif match:
            runs.append((offset, offset + match.end(1), [match.group(1)]))
        previous, offset = bool(match), offset + len(line)
    return [(start, end, ", ".join(items)) for start, end, items in runs]


def _sequence_spans(task: Task, text: str) -> list[tuple[str, int, int]]:
    want = len(split_items(task.answer))
    found = [(m.start(), m.end(), m.group(0)) for m in _LIST.finditer(text)]
    found += _bullet_lists(text)
    return [(items, a, b) for a, b, items in sorted(found) if len(split_items(items)) == want]


def extract_sequence(task: Task, text: str) -> str | None:
    """Ordering: the last complete list, comma-separated or one item per bulleted line,
    with as many items as the task's list ("Sorted: 11, 45, 81." -> "11, 45, 81"); a
    list cut short does not count."""
    spans = _sequence_spans(task, text)
    return spans[-1][0] if spans else None


def _text_spans(task: Task, text: str) -> list[tuple[str, int, int]]:
    asked = {_fold(q) for m in _QUOTED.finditer(task.question) for q in m.groups() if q}
    quoted = [
        (m.group(g), m.start(g), m.end(g))
        for m in _QUOTED.finditer(text)
        for g in range(1, len(m.groups()) + 1)
        if m.group(g)
    ]
    quoted = [q for q in quoted if _fold(q[0].strip()) not in asked]
    if quoted:
        return quoted
    start = len(text) - len(text.lstrip())
    for match in _AFTER.finditer(text.strip()):  # "The answer is: Elephant" -> "Elephant"
        start = len(text) - len(text.lstrip()) + match.end()
    words = _strip_edges(text[start:]).split()
    return [(" ".join(words), start, len(text))] if 0 < len(words) <= 3 else []


def extract_text(task: Task, text: str) -> str | None:
    """Translation: the last quoted (or bold) phrase that is not the word asked about
    ('The translation of "listen" is "escuchar".' -> "escuchar"); with no quotes, the
    whole text when it is at most three words ("Escuchar.")."""
    spans = _text_spans(task, text)
    return spans[-1][0] if spans else None


EXTRACTORS: dict[str, Callable[[Task, str], str | None]] = {
    "number": extract_number,
    "text": extract_text,
    "sequence": extract_sequence,
}
# The same, as every candidate in the order written, each with its span in the text.
_CANDIDATES: dict[str, Callable[[Task, str], list[tuple[str, int, int]]]] = {
    "number": _number_spans,
    "text": _text_spans,
    "sequence": _sequence_spans,
}


def extract(task: Task, text: str) -> str | None:
    """The answer ``text`` states without tags, by the task's checker; never raises."""
    fn = EXTRACTORS.get(task.checker)
    return fn(task, text) if fn else None


# --- An answer read off an echo of the question earns nothing ---------------------------
# A text that repeats its question (`Repeat this word: "city"`, `Which number is larger:
# 45 or 67?`, or such a text cut short by the budget) holds the question's own words, and
# on some questions those read as the answer. The flexible filter takes no candidate that
# lies inside a repeated stretch of the question.

_WORD = re.compile(r"\d+(?:\.\d+)?|[^\W\d_]+")  # "5.75" is one word; "x=3", "1,2" are two


def _words(text: str) -> list[tuple[str, int, int]]:
    return [(_fold(m.group(0)), m.start(), m.end()) for m in _WORD.finditer(text)]


def repeats_question(question: str, text: str, start: int, end: int) -> bool:
    """True when ``text[start:end]`` only repeats the question: its words are consecutive
    words of the question, and together with the words of ``text`` around them that go on
    repeating the same stretch they make at least two words ("... larger: 45 or 67" -> 67
    repeats; "88 - 28 = 60" -> 60 does not; a reply that is just "city" does not).
    Words compare folded (case, accents); punctuation and spacing are ignored."""
    asked = [w for w, _, _ in _words(question)]
    words = _words(text)
    inside = [i for i, (_, a, b) in enumerate(words) if a < end and b > start]
    if not inside:
        return False
    first, last = inside[0], inside[-1] + 1
    said = [w for w, _, _ in words]
    n = last - first
    for j in range(len(asked) - n + 1):
        if said[first:last] != asked[j : j + n]:
            continue
        left = 0
        while first - left > 0 and j - left > 0 and said[first - left - 1] == asked[j - left - 1]:
            left += 1
        right = 0
        while (
            last + right < len(said)
            and j + n + right < len(asked)
            and said[last + right] == asked[j + n + right]
        ):
            right += 1
        if left + n + right >= 2:
            return True
    return False


def flexible_answer(task: Task, text: str) -> str | None:
    """What the ``flexible`` filter reads from an untagged turn: the last candidate the
    task's extractor finds (see :func:`extract`) that does not merely repeat the question
    (:func:`repeats_question`), or None. An echo of the question earns nothing."""
    fn = _CANDIDATES.get(task.checker)
    if fn is None:
        return None
    kept = [c for c, a, b in fn(task, text) if not repeats_question(task.question, text, a, b)]
    return kept[-1] if kept else None
