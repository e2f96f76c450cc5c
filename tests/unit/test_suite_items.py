"""The suite's items: scenario x image x build, and shards that split them deterministically."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.errors import ConfigError
from harness.scenario.loader import load_scenario
from harness.suite import Item, expand, parse_shard, select_shard

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = [load_scenario(path) for path in sorted((ROOT / "scenarios").glob("*.yaml"))]


def test_expand_is_build_by_scenario_by_image() -> None:
    items = expand(SCENARIOS[:2], {"baseline": Path("a"), "candidate": Path("b")}, ["win10", "win11"])
    assert [item.key for item in items] == [
        f"{scenario.id}@{image}@{build}"
        for build in ("baseline", "candidate")
        for scenario in SCENARIOS[:2]
        for image in ("win10", "win11")
    ]
    assert expand(SCENARIOS[:1], {None: Path("d")})[0].key == SCENARIOS[0].id


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0", "-1/2", "1/2/3"])
def test_bad_shards_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="K/N"):
        parse_shard(text)


@given(count=st.integers(min_value=0, max_value=40), shards=st.integers(min_value=1, max_value=7), images=st.integers(1, 3))
def test_shards_cover_every_item_exactly_once_and_are_balanced(count: int, shards: int, images: int) -> None:
    scenarios = (SCENARIOS * 5)[:count]
    items: list[Item] = [
        Item(scenario, Path("d"), f"img{image}", None) for index, scenario in enumerate(scenarios) for image in range(images)
    ]
    # Same scenario twice in a list stands for two files: keep keys unique as a suite would.
    items = list({item.key: item for item in items}.values())
    parts = [select_shard(items, shard, shards) for shard in range(1, shards + 1)]
    assert sorted(item.key for part in parts for item in part) == sorted(item.key for item in items)
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 1
    # Deterministic, and independent of the order the items were listed in.
    assert [item.key for item in select_shard(list(reversed(items)), 1, shards)] == [
        item.key for item in reversed(select_shard(items, 1, shards))
    ]
