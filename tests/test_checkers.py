import pytest

from interrupt_bench.checkers import parse_number, split_items
from interrupt_bench.tasks import Task

SQRT = Task("math", "sqrt", "sqrt 110", "10.49", checker="number", tolerance=0.01)
ADD = Task("math", "add", "7 + 5", "12", checker="number")
HELLO = Task("translation", "fr-en", "Bonjour", "hello", checker="text", accepted=("hi",))
CAFE = Task("translation", "en-fr", "coffee", "café", checker="text", target_language="fr")
SORT = Task("ordering", "sort_ascending", "5 2 9", "2 5 9", checker="sequence")
WORDS = Task("ordering", "sort_words", "b a", "apple banana", checker="sequence")


@pytest.mark.parametrize(
    ("task", "response", "ok"),
    [
        (SQRT, "10.49", True),
        (SQRT, "10.490", True),
        (SQRT, " 10.49. ", True),
        (SQRT, "≈ 10.49", True),
        (SQRT, "10.48", True),
        (SQRT, "10.5", True),
        (SQRT, "10.47", False),
        (SQRT, "11", False),
        (SQRT, "", False),
        (SQRT, "10.49 or 10.5", False),
        (ADD, "12", True),
        (ADD, "12.0", True),
        (ADD, "7 + 5 = 12", True),
        (ADD, "The answer is 12.", True),
        (ADD, "13", False),
        (ADD, "1 2", False),
        (ADD, "twelve", False),
        (ADD, "-12", False),
        (HELLO, "Hello", True),
        (HELLO, '"hi!"', True),
        (HELLO, "HELLO.", True),
        (HELLO, "hey", False),
        (HELLO, "hello world", False),
        (CAFE, "cafe", True),
        (CAFE, "le café", True),
        (CAFE, "Café", True),
        (CAFE, "thé", False),
        (SORT, "2 5 9", True),
        (SORT, "2, 5, 9", True),
        (SORT, "[2, 5, 9]", True),
        (SORT, "2,5,9", True),
        (SORT, "2, 5 and 9", True),
        (SORT, "9 5 2", False),
        (SORT, "2 5", False),
        (SORT, "2 5 9 9", False),
        (WORDS, "Apple, Banana", True),
        (WORDS, "banana apple", False),
    ],
)
def test_checker_table(task, response, ok):
    assert task.check(response) is ok


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1,234", 1234.0),
        ("−5", -5.0),
        ("15%", 15.0),
        (".5", 0.5),
        ("0.5", 0.5),
        ("nan", None),
        ("1e400", None),
    ],
)
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_split_items_separators():
    assert split_items("[a; b | c]") == ["a", "b", "c"]
