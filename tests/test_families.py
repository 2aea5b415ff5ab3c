import random
import re
from collections import Counter

import pytest

from interrupt_bench.checkers import split_items
from interrupt_bench.config import CONFIGS, SPLITS
from interrupt_bench.episodes import generate_split
from interrupt_bench.families import get_family
from interrupt_bench.families.ordering import ordered
from interrupt_bench.families.translation import DIRECTIONS, english_words, lexicon
from interrupt_bench.tasks import FAMILIES, Task, register_family

# Families whose answer is shown in the question by design: the easy tier's copying,
# picking and comparison (one of the two numbers shown) are about reading it off.
READ_OFF_FAMILIES = ("copying", "picking", "comparison")


@pytest.mark.parametrize(
    "name", ["math", "translation", "ordering", "copying", "picking", "comparison"]
)
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_canonical_and_accepted_answers_pass_their_own_checker(name, difficulty):
    rng = random.Random(difficulty)
    family = get_family(name)
    kinds = Counter()
    for _ in range(400):
        task = family.generate(rng, difficulty)
        kinds[task.kind] += 1
        assert task.family == name and task.question and task.answer
        assert task.check(task.answer), task
        assert all(task.check(alt) for alt in task.accepted), task
        assert not task.check(""), task
    assert set(kinds) == set(family.kinds)


def test_generation_is_deterministic():
    for family in ("math", "translation", "ordering", "copying", "picking", "comparison"):
        a = [get_family(family).generate(random.Random(7), 2) for _ in range(3)]
        b = [get_family(family).generate(random.Random(7), 2) for _ in range(3)]
        assert a == b


def test_math_wrong_numbers_are_wrong():
    rng = random.Random(0)
    for _ in range(300):
        task = get_family("math").generate(rng, 2)
        value = float(task.answer)
        assert not task.check(str(value + 1)), task
        assert not task.check(str(round(value + 3 * max(task.tolerance, 0.01), 2))), task


def test_easy_answers_are_in_the_question_and_others_are_wrong():
    """The easy tier's answers are shown in the question; the other numbers or words of
    the question are wrong answers (a model that picks the wrong one scores nothing)."""
    from interrupt_bench.families.picking import CATEGORIES, FILLERS

    rng = random.Random(3)
    in_category = set().union(*CATEGORIES.values())
    assert not in_category & set(FILLERS)
    for name in ("copying", "picking", "comparison"):
        for _ in range(300):
            task = get_family(name).generate(rng, 1)
            assert task.answer in task.question, task
            shown = re.findall(r"\w+", task.question.split(":")[-1])
            others = [w for w in shown if w not in (task.answer, "or")]
            if name == "comparison":
                assert len(others) == 1 and not task.check(others[0]), task
                a, b = int(others[0]), int(task.answer)
                assert (b > a) == (task.kind == "larger"), task
            elif task.kind in ("first_word", "in_category"):
                assert others and not any(task.check(w) for w in others), task
            if task.kind == "in_category":
                assert sum(w in in_category for w in re.findall(r"\w+", task.question)) == 1


DEFAULT_TEST_0_FAMILIES = ["translation", "ordering", "math", "math", "math"]
DEFAULT_TEST_0_Q1 = 'What is the translation of "listen" from English to Spanish?'


def test_easy_episodes_keep_the_default_bytes():
    """Adding the easy tier left every existing config's rows as they were, and generator
    1.1.0 (no question shows its answer) redraws only the episodes it touches: the
    default's first test episode is the one generator version 1.0.0 gave."""
    from interrupt_bench.config import get_config
    from interrupt_bench.episodes import generate_episode

    episode = generate_episode(get_config("default"), "test", 0)
    assert episode.generator_version == "1.1.0"
    assert [t.family for t in episode.tasks] == DEFAULT_TEST_0_FAMILIES
    assert episode.tasks[0].question == DEFAULT_TEST_0_Q1
    assert episode.budgets == (29, 5, 46, 65, 3)


def test_lexicon_covers_each_direction_with_synonyms():
    entries = lexicon()
    for src, dst in DIRECTIONS:
        pairs = {e.forms[src][0] for e in entries if e.forms[src] and e.forms[dst]}
        assert len(pairs) >= 150, (src, dst, len(pairs))
    assert sum(e.kind == "phrase" for e in entries) >= 30
    hello = next(e for e in entries if "hello" in e.forms["en"])
    assert "hi" in hello.forms["en"]
    assert len(english_words()) >= 50


def test_translation_accepts_synonyms_and_rejects_others():
    task = Task("translation", "fr-en", "bonjour", "hello", checker="text", accepted=("hi",))
    assert task.check("Hi") and task.check("hello!") and not task.check("goodbye")


def test_registry_takes_new_families_without_touching_others():
    @register_family("echo_test", "repeat a word", ("echo",))
    def echo(rng, difficulty):
        word = rng.choice(["alpha", "beta"])
        return Task("echo_test", "echo", f"Repeat: {word}", word, checker="text")

    try:
        from interrupt_bench.config import EpisodeConfig
        from interrupt_bench.episodes import generate_episode

        config = EpisodeConfig("echo_only", families=("echo_test",))
        episode = generate_episode(config, "test", 0)
        assert {t.family for t in episode.tasks} == {"echo_test"}
    finally:
        del FAMILIES["echo_test"]


def shown_answer(task: Task) -> str | None:
    """A stretch of the question's words that the task's own checker accepts as its
    answer (at most one word longer than the answer or an accepted form), or None."""
    words = task.question.split()
    width = 1 + max(len(split_items(a)) for a in (task.answer, *task.accepted))
    for i in range(len(words)):
        for j in range(i + 1, min(len(words), i + width) + 1):
            if task.check(" ".join(words[i:j])):
                return " ".join(words[i:j])
    return None


def _shows_its_answer(task: Task) -> str | None:
    """Why ``task`` shows its answer, or None."""
    if task.family == "ordering":
        items = split_items(task.question.split(":", 1)[1])
        if ordered(task.kind, items) == items:
            return f"list already in the asked order: {task.question}"
    if task.family not in READ_OFF_FAMILIES and shown_answer(task) is not None:
        return f"{task.question!r} shows {shown_answer(task)!r} (answer {task.answer!r})"
    return None


@pytest.mark.parametrize("name", ["math", "translation", "ordering"])
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_no_family_question_shows_its_answer(name, difficulty):
    """Only the read-off families show their answer: an ordering list is never already in
    the asked order, and no run of a math or translation question's words is accepted
    as its answer ("What is 81 ÷ 9?", 'the translation of "animal" from French to
    English', "tea" in French, "thé", beside the question's "the")."""
    rng = random.Random(difficulty)
    for _ in range(400):
        task = get_family(name).generate(rng, difficulty)
        assert _shows_its_answer(task) is None, _shows_its_answer(task)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_no_shipped_question_shows_its_answer(config):
    """Every shipped config's splits (their first 150 episodes each): no ordering list is
    already in the asked order, and no question outside the read-off families shows its
    answer as its own visible text."""
    shown = [
        why
        for split in SPLITS
        for episode in generate_split(CONFIGS[config], split, 150)
        for task in episode.tasks
        if (why := _shows_its_answer(task))
    ]
    assert not shown, shown[:5]
