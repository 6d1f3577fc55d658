from __future__ import annotations

import pytest

from watchdog.lineage import HANDLED_TAG, RESUMED_TAG, Lineage, clone_tags, is_clone_for, lineage_of


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ([], Lineage("t", 0)),  # an original is its own root
        (["user-tag"], Lineage("t", 0)),
        ([RESUMED_TAG, "watchdog:attempt-2", "watchdog:root-r0"], Lineage("r0", 2)),
        # attempt/root tags without the resumed marker are not ours (a user typed them): ignored
        (["watchdog:attempt-2", "watchdog:root-r0"], Lineage("t", 0)),
        ([RESUMED_TAG, "watchdog:attempt-x", "watchdog:root-"], Lineage("t", 0)),  # malformed: ignored
    ],
)
def test_lineage_of(tags: list[str], expected: Lineage) -> None:
    assert lineage_of("t", tags) == expected


def test_clone_tags_keep_user_tags_and_replace_ours() -> None:
    tags = clone_tags(["exp", RESUMED_TAG, "watchdog:attempt-1", "watchdog:root-r", HANDLED_TAG], Lineage("r", 1))
    assert tags == ["exp", RESUMED_TAG, "watchdog:attempt-2", "watchdog:root-r"]
    assert is_clone_for(tags, 2)
    assert not is_clone_for(tags, 1)  # a person's copy of attempt 1 is not attempt 2's clone
