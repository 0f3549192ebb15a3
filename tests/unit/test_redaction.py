"""Masking declared secret values."""

from __future__ import annotations

from orchestration.redaction import MASK, Redactor


def test_only_the_declared_secrets_are_masked() -> None:
    environ = {"API_KEY": "sk-live-123456", "OTHER": "not-declared-1234", "PATH": "/usr/bin"}
    redact = Redactor.for_secrets(["API_KEY", "MISSING"], environ)
    text = "key sk-live-123456 and not-declared-1234 on /usr/bin"
    assert redact.text(text) == f"key {MASK} and not-declared-1234 on /usr/bin"


def test_a_secret_inside_another_is_masked_whole() -> None:
    redact = Redactor.for_secrets(["A", "B"], {"A": "token", "B": "token-extended"})
    assert redact.text("token-extended, token") == f"{MASK}, {MASK}"


def test_short_values_are_left_alone() -> None:
    redact = Redactor.for_secrets(["PIN"], {"PIN": "42"})
    assert redact.text("answer 42") == "answer 42"


def test_nested_data_is_masked() -> None:
    redact = Redactor.for_secrets(["S"], {"S": "hunter22"})
    data = {"reason": "saw hunter22", "list": ["hunter22", 3], "n": 1.5, "t": ("hunter22",)}
    assert redact.data(data) == {"reason": f"saw {MASK}", "list": [MASK, 3], "n": 1.5, "t": (MASK,)}
    assert redact.optional(None) is None
