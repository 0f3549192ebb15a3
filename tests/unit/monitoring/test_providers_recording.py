"""Provider accounts in the portfolio and in the monitoring sensor's plan: an account's status
from its recorded state and its pool (`ProviderStatus.of`), how it reads for people, and when
the sensor records `orchestration/providers` and which pauses and resumes it alerts."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from orchestration.allocation.providers import ProviderState
from orchestration.allocation.providers import ProviderStatus as Status
from orchestration.monitoring.portfolio import (
    Portfolio,
    ProviderStatus,
    assemble_portfolio,
    utc_iso,
)
from orchestration.monitoring.recording import MonitorCursor, plan_monitoring
from tests.unit.monitoring.records import NOW

UNTIL = NOW + timedelta(hours=2)
PAUSED = ProviderState(
    "anthropic",
    Status.PAUSED,
    until=UNTIL,
    reason="usage limit; resets 2026-03-10 11:28:30Z",
    window="five_hour",
    source_task="t1",
    since=NOW,
)


def portfolio(*states: ProviderState) -> Portfolio:
    return assemble_portfolio(
        now=NOW,
        tasks=[],
        priorities={"alpha": 50},
        states={},
        providers=[ProviderStatus.of(state, 4) for state in states],
    )


def test_an_account_as_its_state_and_pool_say() -> None:
    paused = ProviderStatus.of(PAUSED, 4)
    assert (paused.paused, paused.status, paused.limit, paused.configured) == (
        True,
        "paused",
        0,
        4,
    )
    assert paused.describe() == "paused until 2026-03-10T11:30:00Z (five_hour, from task t1)"
    assert paused.to_dict()["until"] == "2026-03-10T11:30:00Z"
    assert paused.to_dict()["pool"] == "provider_anthropic"

    canary = ProviderStatus.of(replace(PAUSED, status=Status.CANARY), 4)
    assert (canary.paused, canary.limit) == (False, 1)
    assert canary.describe() == "canary (one slot) until 2026-03-10T11:30:00Z"

    held = ProviderStatus.of(replace(PAUSED, until=None, window=None, source_task=None), 4)
    assert held.describe() == "paused until resumed by hand"
    assert ProviderStatus.of(ProviderState("openai"), 3).describe() == "open"
    assert ProviderStatus.of(ProviderState("openai"), 3).limit == 3
    assert utc_iso(NOW) == "2026-03-10T09:30:00Z"


def test_the_first_tick_records_the_accounts_and_alerts_only_a_pause() -> None:
    plan = plan_monitoring(portfolio(PAUSED, ProviderState("openai")), MonitorCursor(), now=NOW)

    assert plan.providers
    assert [(c.provider.name, c.before, c.paused) for c in plan.provider_changes] == [
        ("anthropic", "open", True)
    ]
    assert plan.cursor.providers == {"anthropic": "paused", "openai": "open"}
    assert MonitorCursor.from_json(plan.cursor.to_json()) == plan.cursor


def test_a_quiet_tick_records_nothing_and_a_change_records_once() -> None:
    first = plan_monitoring(portfolio(ProviderState("anthropic")), MonitorCursor(), now=NOW)
    quiet = plan_monitoring(portfolio(ProviderState("anthropic")), first.cursor, now=NOW)
    assert first.providers and first.provider_changes == ()
    assert not quiet.providers and quiet.provider_changes == ()

    paused = plan_monitoring(portfolio(PAUSED), quiet.cursor, now=NOW)
    assert paused.providers and [c.paused for c in paused.provider_changes] == [True]

    # A longer pause of the same account is recorded, not alerted again.
    extended = plan_monitoring(
        portfolio(replace(PAUSED, until=UNTIL + timedelta(hours=1))), paused.cursor, now=NOW
    )
    assert extended.providers and extended.provider_changes == ()


def test_a_canary_or_an_opening_after_a_pause_is_a_resume() -> None:
    paused = plan_monitoring(portfolio(PAUSED), MonitorCursor(), now=NOW)
    canary = plan_monitoring(
        portfolio(replace(PAUSED, status=Status.CANARY)), paused.cursor, now=NOW
    )
    assert [(c.before, c.paused, c.provider.status) for c in canary.provider_changes] == [
        ("paused", False, "canary")
    ]
    opened = plan_monitoring(portfolio(ProviderState("anthropic")), canary.cursor, now=NOW)
    assert opened.providers and opened.provider_changes == ()  # it resumed at the canary

    again = plan_monitoring(portfolio(PAUSED), canary.cursor, now=NOW)
    assert [(c.before, c.paused) for c in again.provider_changes] == [("canary", True)]

    by_hand = plan_monitoring(portfolio(ProviderState("anthropic")), paused.cursor, now=NOW)
    assert [(c.before, c.paused) for c in by_hand.provider_changes] == [("paused", False)]


def test_a_cursor_of_before_providers_reads_as_all_open() -> None:
    cursor = MonitorCursor.from_json('{"day": "2026-03-10", "portfolio": "x"}')
    assert cursor.providers == {} and cursor.providers_mark == ""
    plan = plan_monitoring(portfolio(ProviderState("anthropic")), cursor, now=NOW)
    assert plan.providers and plan.provider_changes == ()
