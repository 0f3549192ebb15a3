"""Provider usage limits, read from what an agent CLI printed: whether a run ended because the
account it spends hit its plan's limit (and until when), hit a short rate limit, or is close
to its limit. Pure functions over the CLI's parsed output and a given moment.

Structured signals come first, text only when there is none: Claude Code's `rate_limit_event`
(stream-json) and its result's `api_error_status`/`terminal_reason`, then the texts Claude Code
and Codex print ("You've hit your limit · resets 6:20pm (Europe/Berlin)", the older
"Claude AI usage limit reached|<epoch>", Codex's "… try again at 3:05 PM."). Codex prints its
reset time in the local zone without naming it: its profile runs it under `TZ=UTC`, so the
time is read as UTC. A plain 429 with no sign of a plan limit (an API key's per-minute limit)
is transient, never a long pause.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class LimitKind(StrEnum):
    #: The account's plan is used up until a reset (or, with no reset known, until resumed).
    USAGE_LIMIT = "usage_limit"
    #: A short rate limit: try again in a minute or two.
    TRANSIENT = "transient"
    #: Still allowed, but close to the limit.
    SOFT = "soft"


@dataclass(frozen=True)
class UsageLimit:
    """A provider limit an agent run ran into."""

    kind: LimitKind
    #: When the provider says the limit resets; None when it did not say (or it cannot be read).
    resets_at: datetime | None
    #: Which signal said so: rate_limit_event, api_error, terminal_reason, limit_text,
    #: legacy_text, codex_text, codex_credits, retry_429.
    source: str
    #: The provider's own window name when it gave one (five_hour, seven_day, ...).
    window: str | None = None
    #: How much of the window is used (0-1), when the provider said.
    utilization: float | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "resets_at": self.resets_at.isoformat() if self.resets_at else None,
            "source": self.source,
            "window": self.window,
            "utilization": self.utilization,
            "message": self.message,
        }


#: The beginnings of Claude Code's usage-limit messages (its SDK's USAGE_LIMIT_ERROR_PREFIXES).
CLAUDE_LIMIT_PREFIXES = (
    "you've hit your",
    "you've reached your",
    "you're out of usage credits",
    "you're out of extra usage",
    "your org is out of usage",
    "your group's usage limit is set to $0",
)
#: Claude Code's result `terminal_reason`s that mean a plan limit.
CLAUDE_LIMIT_REASONS = ("blocking_limit", "rapid_refill_breaker")
#: `rate_limit_event` utilization from which a run is close to its limit.
SOFT_UTILIZATION = 0.9
_LEGACY = re.compile(r"usage limit reached\|(\d{10})", re.IGNORECASE)
_RESETS = re.compile(
    r"resets\s+(?:(?P<day>[A-Za-z]{3}\s+\d{1,2})\s+at\s+)?"
    r"(?P<time>\d{1,2}(?::\d{2})?\s*[ap]m)\s*\((?P<zone>[^)]+)\)",
    re.IGNORECASE,
)
_CODEX_LIMIT = ("you've hit your usage limit", "your workspace is out of credits")
_CODEX_AT = re.compile(
    r"try again at\s+(?:(?P<month>[A-Za-z]{3})\s+(?P<day>\d{1,2})(?:st|nd|rd|th)?,\s*"
    r"(?P<year>\d{4})\s+)?(?P<time>\d{1,2}:\d{2}\s*[AP]M)",
    re.IGNORECASE,
)
_RETRY_429 = re.compile(r"\b429\b|too many requests|resource_exhausted|rate limit", re.IGNORECASE)


def claude_limit(records: Sequence[Mapping[str, Any]], *, now: datetime) -> UsageLimit | None:
    """The limit Claude Code's output shows, from every JSON object it printed (the one result
    of `--output-format json`, or each line of `stream-json`); None when there is none."""
    events = [r for r in records if r.get("type") == "rate_limit_event"]
    results = [r for r in records if r.get("type") == "result" or "is_error" in r]
    result = results[-1] if results else {}
    info = dict(events[-1].get("rate_limit_info") or {}) if events else {}
    text = _normal(str(result.get("result") or ""))
    if info.get("status") == "rejected":
        return UsageLimit(
            LimitKind.USAGE_LIMIT,
            _event_reset(info),
            "rate_limit_event",
            window=_text_or_none(info.get("rateLimitType")),
            utilization=_number(info.get("utilization")),
            message=text,
        )
    error = bool(result.get("is_error"))
    rate_limited = any(
        r.get("type") == "assistant" and r.get("error") == "rate_limit" for r in records
    )
    if error and result.get("terminal_reason") in CLAUDE_LIMIT_REASONS:
        return UsageLimit(
            LimitKind.USAGE_LIMIT, _text_reset(text, now), "terminal_reason", message=text
        )
    if error and result.get("api_error_status") == 429 and rate_limited:
        return UsageLimit(LimitKind.USAGE_LIMIT, _text_reset(text, now), "api_error", message=text)
    # A result's text is read only when it is an error: a summary may begin "You've reached".
    found = claude_limit_in_text(text, now=now) if error else None
    if found is not None:
        return found
    if error and (result.get("api_error_status") == 429 or _RETRY_429.search(text)):
        return UsageLimit(LimitKind.TRANSIENT, None, "retry_429", message=text)
    if info.get("status") == "allowed_warning":
        used = _number(info.get("utilization"))
        if used is not None and used >= SOFT_UTILIZATION:
            return UsageLimit(
                LimitKind.SOFT,
                _event_reset(info),
                "rate_limit_event",
                window=_text_or_none(info.get("rateLimitType")),
                utilization=used,
            )
    return None


def claude_limit_in_text(text: str, *, now: datetime) -> UsageLimit | None:
    """A usage limit in a text Claude Code printed (its result, or its plain output)."""
    text = _normal(text)
    legacy = _LEGACY.search(text)
    if legacy:
        reset = datetime.fromtimestamp(int(legacy.group(1)), UTC)
        return UsageLimit(LimitKind.USAGE_LIMIT, reset, "legacy_text", message=text)
    lowered = text.lower()
    if any(
        lowered.startswith(prefix) or f"\n{prefix}" in lowered for prefix in CLAUDE_LIMIT_PREFIXES
    ):
        return UsageLimit(LimitKind.USAGE_LIMIT, _text_reset(text, now), "limit_text", message=text)
    return None


def codex_limit(messages: Iterable[str], *, now: datetime) -> UsageLimit | None:
    """The limit Codex's error messages show (`turn.failed` and `error` events of `codex exec
    --json`, or its plain output), the agent run under TZ=UTC; None when there is none."""
    found: UsageLimit | None = None
    for raw in messages:
        text = _normal(raw)
        lowered = text.lower()
        if "out of credits" in lowered:
            return UsageLimit(LimitKind.USAGE_LIMIT, None, "codex_credits", message=text)
        if any(marker in lowered for marker in _CODEX_LIMIT):
            return UsageLimit(
                LimitKind.USAGE_LIMIT, _codex_reset(text, now), "codex_text", message=text
            )
        if found is None and ("exceeded retry limit" in lowered or _RETRY_429.search(text)):
            found = UsageLimit(LimitKind.TRANSIENT, None, "retry_429", message=text)
    return found


def _normal(text: str) -> str:
    """Typographic apostrophes as plain ones (some builds print "You’ve")."""
    return text.replace("\u2019", "'").strip()


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _text_or_none(value: Any) -> str | None:
    return str(value) if value else None


def _event_reset(info: Mapping[str, Any]) -> datetime | None:
    """`resetsAt` (epoch seconds), or the overage reset when the overage was refused and ends
    later."""
    times = [info.get("resetsAt")]
    if info.get("overageStatus") == "rejected":
        times.append(info.get("overageResetsAt"))
    seconds = [t for t in (_number(value) for value in times) if t is not None]
    return datetime.fromtimestamp(max(seconds), UTC) if seconds else None


def _text_reset(text: str, now: datetime) -> datetime | None:
    """The moment "resets 6:20pm (Europe/Berlin)" or "resets Apr 23 at 4pm (America/Recife)"
    names: the next such moment after `now` (today's time already past: tomorrow's)."""
    match = _RESETS.search(text)
    if match is None:
        return None
    try:
        zone = ZoneInfo(match.group("zone").strip())
    except (ZoneInfoNotFoundError, ValueError):
        return None
    clock = _clock(match.group("time"))
    if clock is None:
        return None
    local_now = now.astimezone(zone)
    if match.group("day"):
        try:
            day = datetime.strptime(f"{match.group('day')} {local_now.year}", "%b %d %Y")
        except ValueError:
            return None
        moment = day.replace(hour=clock[0], minute=clock[1], tzinfo=zone)
        if moment < local_now - timedelta(days=180):  # "Jan 2" read in late December
            moment = moment.replace(year=moment.year + 1)
        return moment.astimezone(UTC)
    moment = local_now.replace(hour=clock[0], minute=clock[1], second=0, microsecond=0)
    if moment <= local_now:
        moment += timedelta(days=1)
    return moment.astimezone(UTC)


def _codex_reset(text: str, now: datetime) -> datetime | None:
    """The UTC moment of Codex's "try again at 3:05 PM" (today, or tomorrow when past) or "try
    again at Sep 18th, 2026 12:04 AM"."""
    match = _CODEX_AT.search(text)
    if match is None:
        return None
    clock = _clock(match.group("time"))
    if clock is None:
        return None
    current = now.astimezone(UTC)
    if match.group("year"):
        try:
            day = datetime.strptime(
                f"{match.group('month')} {match.group('day')} {match.group('year')}", "%b %d %Y"
            )
        except ValueError:
            return None
        return day.replace(hour=clock[0], minute=clock[1], tzinfo=UTC)
    moment = current.replace(hour=clock[0], minute=clock[1], second=0, microsecond=0)
    return moment if moment > current else moment + timedelta(days=1)


def _clock(text: str) -> tuple[int, int] | None:
    """(hour, minute) of "6:20pm", "4pm", "12:04 AM"."""
    match = re.fullmatch(r"(\d{1,2})(?::(\d{2}))?\s*([ap]m)", text.strip(), re.IGNORECASE)
    if match is None:
        return None
    hour, minute = int(match.group(1)), int(match.group(2) or 0)
    if not (1 <= hour <= 12 and minute < 60):
        return None
    hour = hour % 12 + (12 if match.group(3).lower() == "pm" else 0)
    return hour, minute
