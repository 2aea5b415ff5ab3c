import random
from collections import Counter

import pytest

from interrupt_bench.families import get_family
from interrupt_bench.families.translation import DIRECTIONS, english_words, lexicon
from interrupt_bench.tasks import FAMILIES, Task, register_family


@pytest.mark.parametrize("name", ["math", "translation", "ordering"])
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
    for family in ("math", "translation", "ordering"):
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
