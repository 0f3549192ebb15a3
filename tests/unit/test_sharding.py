"""Which shard holds a project: a stable hash, the same on every host and process."""

from __future__ import annotations

import subprocess
import sys

import pytest

from orchestration.sharding import (
    LOCATION,
    Shard,
    ShardError,
    location_of,
    parse_shard,
    shard_from_env,
    shard_of_attribute,
    split_evenly,
    stable_bucket,
)

NAMES = [f"project_{i}" for i in range(200)]


def test_the_bucket_is_crc32_and_the_same_in_another_process() -> None:
    assert stable_bucket("acme_api", 1000) == 3887059812 % 1000  # zlib.crc32(b"acme_api")
    code = "from orchestration.sharding import stable_bucket; print(stable_bucket('acme_api', 7))"
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert int(other.stdout) == stable_bucket("acme_api", 7)


def test_each_project_is_held_by_exactly_one_shard() -> None:
    shards = [Shard(i, 4) for i in range(4)]
    for name in NAMES:
        assert sum(shard.holds(name) for shard in shards) == 1
    assert all(sum(shard.holds(name) for name in NAMES) > 20 for shard in shards)
    assert all(Shard().holds(name) for name in NAMES)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0/1", Shard()), ("2/4", Shard(2, 4)), (" 3 / 8 ", Shard(3, 8))],
)
def test_orch_shard_reads_index_and_count(text: str, expected: Shard) -> None:
    assert parse_shard(text) == expected
    assert shard_from_env({"ORCH_SHARD": text}) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("4/4", "shard 4 of 4 does not exist: shards are numbered 0 to 3"),
        ("1/0", "the number of shards must be 1 to 256, not 0"),
        ("1", "expected INDEX/COUNT"),
        ("a/b", "expected INDEX/COUNT"),
        ("-1/4", "expected INDEX/COUNT"),
        ("0/1000", "the number of shards must be 1 to 256"),
    ],
)
def test_a_bad_orch_shard_names_the_variable_and_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ShardError, match=f"ORCH_SHARD={text!r}: .*{message}"):
        parse_shard(text)


def test_unset_or_empty_orch_shard_is_the_whole_registry() -> None:
    assert shard_from_env({}) == Shard() == shard_from_env({"ORCH_SHARD": " "})
    assert Shard().whole and Shard().primary and Shard().location == LOCATION


def test_names_of_shards_in_a_workspace() -> None:
    assert Shard(2, 4).location == "orchestration_2_of_4"
    assert Shard(2, 4).attribute == "shard_2_of_4"
    assert shard_of_attribute("shard_2_of_4") == Shard(2, 4)
    assert shard_of_attribute("defs") is None
    with pytest.raises(ShardError):
        shard_of_attribute("shard_4_of_4")


def test_location_of_finds_the_shard_that_holds_a_project() -> None:
    locations = [Shard(i, 3).location for i in range(3)] + ["other"]
    for name in NAMES[:30]:
        (holder,) = [i for i in range(3) if Shard(i, 3).holds(name)]
        assert location_of(name, locations) == f"orchestration_{holder}_of_3"
    assert location_of("x", ["orchestration", "orchestration_0_of_2"]) == "orchestration"
    assert location_of("x", ["other"]) is None


def test_split_evenly_keeps_small_lists_whole_and_large_ones_stable() -> None:
    assert split_evenly(NAMES[:5], 10) == [NAMES[:5]]
    assert split_evenly([], 10) == []
    groups = split_evenly(NAMES, 50)
    assert len(groups) == 4  # 200 / 50 buckets, by hash
    assert sorted(n for g in groups for n in g) == sorted(NAMES)
    assert split_evenly(list(reversed(NAMES)), 50) == [list(reversed(g)) for g in groups]
    assert max(len(g) for g in groups) < 100
