"""The row schema is written once (``interrupt_bench.schema``): the dataclasses, the
``datasets.Features`` and the rows ``Episode.to_row`` writes all agree with it."""

import dataclasses

from interrupt_bench import generate_episode, get_config
from interrupt_bench.schema import ROW_FIELDS, TASK_FIELDS, episode_features
from interrupt_bench.tasks import Task


def test_task_dataclass_is_the_task_columns():
    assert ("task_id", *(f.name for f in dataclasses.fields(Task))) == TASK_FIELDS


def test_rows_have_the_schema_and_encode_with_the_features():
    episode = generate_episode(get_config("default"), "test", 3)
    row = episode.to_row()
    assert tuple(row) == ROW_FIELDS
    assert all(tuple(t) == TASK_FIELDS for t in row["tasks"])
    features = episode_features()
    assert tuple(features) == ROW_FIELDS
    assert features.decode_example(features.encode_example(row)) == row
    assert type(episode).from_row(row) == episode
