"""Provider usage limits read from agent CLI output: the shapes Claude Code (json, stream-json,
its old and new limit texts) and Codex (exec --json error messages under TZ=UTC) print."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from orchestration.agents.limits import LimitKind, claude_limit, claude_limit_in_text, codex_limit

#: 2026-11-29 14:00 UTC: 15:00 in Berlin, 11:00 in Recife.
NOW = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
RESET = 1_764_432_000  # 2025-11-29 16:00 UTC


def result(text: str = "done", **fields: object) -> dict[str, object]:
    return {"type": "result", "subtype": "success", "is_error": False, "result": text} | fields


def rate_event(status: str, **info: object) -> dict[str, object]:
    return {"type": "rate_limit_event", "rate_limit_info": {"status": status, **info}}


def test_a_rejected_rate_limit_event_is_a_usage_limit_until_its_reset() -> None:
    records = [
        rate_event("rejected", resetsAt=RESET, rateLimitType="five_hour", utilization=1.0),
        {"type": "assistant", "error": "rate_limit"},
        result("API Error: Rate limit reached", is_error=True, api_error_status=429),
    ]

    found = claude_limit(records, now=NOW)

    assert found is not None and found.kind is LimitKind.USAGE_LIMIT
    assert found.resets_at == datetime.fromtimestamp(RESET, UTC)
    assert (found.source, found.window, found.utilization) == ("rate_limit_event", "five_hour", 1.0)


def test_a_refused_overage_that_resets_later_sets_the_reset() -> None:
    later = RESET + 3600
    event = rate_event("rejected", resetsAt=RESET, overageStatus="rejected", overageResetsAt=later)

    found = claude_limit([event, result(is_error=True)], now=NOW)

    assert found is not None and found.resets_at == datetime.fromtimestamp(later, UTC)


def test_a_429_with_the_assistant_rate_limit_error_is_a_usage_limit() -> None:
    records = [
        {"type": "assistant", "error": "rate_limit"},
        result(
            "You've hit your limit · resets 6:20pm (Europe/Berlin)",
            is_error=True,
            api_error_status=429,
        ),
    ]

    found = claude_limit(records, now=NOW)

    assert found is not None and found.kind is LimitKind.USAGE_LIMIT
    assert found.source == "api_error"
    assert found.resets_at == datetime(2026, 11, 29, 17, 20, tzinfo=UTC)


def test_a_blocking_terminal_reason_is_a_usage_limit() -> None:
    found = claude_limit(
        [result("stopped", is_error=True, terminal_reason="blocking_limit")], now=NOW
    )

    assert found is not None and found.kind is LimitKind.USAGE_LIMIT
    assert found.source == "terminal_reason" and found.resets_at is None


def test_a_plain_429_without_a_plan_signal_is_transient() -> None:
    records = [result("API Error: 429 Too Many Requests", is_error=True, api_error_status=429)]

    found = claude_limit(records, now=NOW)

    assert found is not None and found.kind is LimitKind.TRANSIENT and found.resets_at is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # 15:00 in Berlin: 18:20 is later today.
        ("You've hit your limit · resets 6:20pm (Europe/Berlin)", datetime(2026, 11, 29, 17, 20)),
        # 09:30 in Berlin has passed: tomorrow.
        ("You've hit your limit · resets 9:30am (Europe/Berlin)", datetime(2026, 11, 30, 8, 30)),
        ("You've hit your session limit · resets 7:10am (UTC)", datetime(2026, 11, 30, 7, 10)),
        ("You\u2019ve hit your limit · resets 4pm (UTC)", datetime(2026, 11, 29, 16, 0)),
        (
            "You've hit your limit · resets Dec 3 at 4pm (America/Recife)",
            datetime(2026, 12, 3, 19, 0),
        ),
        ("You've reached your usage limit", None),
        ("You're out of usage credits", None),
    ],
)
def test_the_limit_texts_and_their_reset(text: str, expected: datetime | None) -> None:
    found = claude_limit([result(text, is_error=True)], now=NOW)

    assert found is not None and found.kind is LimitKind.USAGE_LIMIT, text
    assert found.source == "limit_text"
    assert found.resets_at == (expected.replace(tzinfo=UTC) if expected else None)


def test_the_legacy_text_carries_its_reset_as_an_epoch() -> None:
    found = claude_limit_in_text(f"Claude AI usage limit reached|{RESET}", now=NOW)

    assert found is not None and found.kind is LimitKind.USAGE_LIMIT
    assert (found.source, found.resets_at) == ("legacy_text", datetime.fromtimestamp(RESET, UTC))


def test_an_unknown_zone_leaves_the_reset_unknown() -> None:
    found = claude_limit_in_text("You've hit your limit · resets 6pm (Mars/Olympus)", now=NOW)

    assert found is not None and found.resets_at is None


def test_a_warning_close_to_the_limit_is_soft_and_a_low_one_nothing() -> None:
    close = claude_limit(
        [rate_event("allowed_warning", utilization=0.93, resetsAt=RESET), result()], now=NOW
    )
    low = claude_limit([rate_event("allowed_warning", utilization=0.5), result()], now=NOW)

    assert close is not None and close.kind is LimitKind.SOFT and close.utilization == 0.93
    assert low is None


def test_a_successful_run_and_an_ordinary_error_have_no_limit() -> None:
    assert claude_limit([rate_event("allowed"), result("all done")], now=NOW) is None
    assert claude_limit([result("tests failed", is_error=True)], now=NOW) is None
    assert claude_limit([], now=NOW) is None
    # A summary that happens to begin like a limit message is not one when the run succeeded.
    assert claude_limit([result("You've reached your goal: all tests pass")], now=NOW) is None


@pytest.mark.parametrize(
    ("message", "kind", "expected"),
    [
        (
            "You've hit your usage limit. Upgrade to Pro or try again at 3:05 PM.",
            LimitKind.USAGE_LIMIT,
            datetime(2026, 11, 29, 15, 5),
        ),
        # 9:00 AM has passed today: tomorrow.
        (
            "You've hit your usage limit. Try again at 9:00 AM.",
            LimitKind.USAGE_LIMIT,
            datetime(2026, 11, 30, 9, 0),
        ),
        (
            "You\u2019ve hit your usage limit for GPT-5. Switch to another model now, or try again "
            "at Sep 18th, 2027 12:04 AM.",
            LimitKind.USAGE_LIMIT,
            datetime(2027, 9, 18, 0, 4),
        ),
        ("Your workspace is out of credits. Add credits to continue.", LimitKind.USAGE_LIMIT, None),
        ("exceeded retry limit, last status: 429 Too Many Requests", LimitKind.TRANSIENT, None),
    ],
)
def test_codex_messages(message: str, kind: LimitKind, expected: datetime | None) -> None:
    found = codex_limit(["reconnecting...", message], now=NOW)

    assert found is not None and found.kind is kind
    assert found.resets_at == (expected.replace(tzinfo=UTC) if expected else None)


def test_codex_without_a_limit() -> None:
    assert codex_limit(["turn failed: tests do not pass"], now=NOW) is None
