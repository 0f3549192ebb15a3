"""The tests' reader of the stand-in agent's log sees only whole entries, whatever moment of an
append it reads at."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.agent_log import entries, events


def test_an_append_half_done_is_left_for_the_next_read(tmp_path: Path) -> None:
    log = tmp_path / "fake_claude.jsonl"
    start = {"event": "start", "agent": "a", "prompt": "ünïcode " * 700}
    whole = [json.dumps({"event": "end", "agent": "0"}), json.dumps(start, ensure_ascii=False)]
    data = (whole[0] + "\n" + whole[1] + "\n").encode("utf-8")
    # Cut inside the long start line and inside one of its two-byte characters.
    cut = data.index("ü".encode(), len(whole[0]) + 4000) + 1
    log.write_bytes(data[:cut])

    assert entries(log) == [{"event": "end", "agent": "0"}]
    assert events("start", log) == []

    log.write_bytes(data)
    assert entries(log) == [{"event": "end", "agent": "0"}, start]
    assert events("start", log) == [start]


def test_logs_are_read_in_the_order_given_and_a_missing_one_holds_nothing(tmp_path: Path) -> None:
    first, second = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    first.write_text('{"event": "start", "n": 1}\n\n{"event": "end", "n": 2}\n', encoding="utf-8")
    second.write_text('{"event": "start", "n": 3}\n', encoding="utf-8")

    assert [e["n"] for e in entries(second, tmp_path / "absent.jsonl", first)] == [3, 1, 2]
    assert [e["n"] for e in events("start", first, second)] == [1, 3]
