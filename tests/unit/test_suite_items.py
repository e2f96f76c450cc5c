"""The suite's items: scenario x image x build, and shards that split them deterministically."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.errors import ConfigError
from harness.runner import ScenarioResult
from harness.scenario.loader import load_scenario
from harness.suite import Item, expand, load_history, longest_first, parse_shard, save_history, select_shard

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


def test_the_longest_items_go_first_and_unknown_ones_before_them(tmp_path: Path) -> None:
    items = expand(SCENARIOS[:4], {None: Path("d")})
    history = {items[0].key: 1.0, items[1].key: 3.0, items[3].key: 2.0}
    assert longest_first(items, history) == [2, 1, 3, 0]
    assert longest_first(items, {}) == [0, 1, 2, 3]  # no history: as listed


def test_durations_are_remembered_between_runs(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "durations.json"
    assert load_history(path) == {}
    result = ScenarioResult(id="a", name="a", path=Path("a.yaml"), guest="wine", run_dir=tmp_path, duration=2.5)
    save_history(path, [result])
    other = ScenarioResult(id="b", name="b", path=Path("b.yaml"), guest="wine", run_dir=tmp_path, duration=1.25, image="win10")
    save_history(path, [other])
    assert load_history(path) == {"a": 2.5, "b@win10": 1.25}
    path.write_text("not json")
    assert load_history(path) == {}
