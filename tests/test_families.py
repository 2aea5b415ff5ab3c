import random
import re
from collections import Counter

import pytest

from interrupt_bench.families import get_family
from interrupt_bench.families.translation import DIRECTIONS, english_words, lexicon
from interrupt_bench.tasks import FAMILIES, Task, register_family


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
    """Adding the easy tier leaves every existing config's rows as they were: the
    default's first test episode is the one generator version 1.0.0 always gave."""
    from interrupt_bench.config import get_config
    from interrupt_bench.episodes import generate_episode

    episode = generate_episode(get_config("default"), "test", 0)
    assert episode.generator_version == "1.0.0"
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
