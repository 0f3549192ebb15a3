"""`config/alerts.yaml`: no alerts without it; with it, webhooks validated with the file and key
named, `${VAR}` URLs accepted (and a warning when the variable is unset), never a URL echoed."""

from __future__ import annotations

from orchestration.registry.models import ALERT_EVENTS, expand_placeholders
from tests.support.registry import RegistryDir

SECRET_PATH = "/services/T000/B000/s3cr3tT0ken"


def errors_of(registry_dir: RegistryDir) -> set[tuple[str, str]]:
    return {(e.file.rsplit("/", 1)[-1], e.key) for e in registry_dir.load().errors}


def test_without_the_file_there_are_no_alerts(registry_dir: RegistryDir) -> None:
    registry = registry_dir.load()
    assert registry.alerts is None and registry.errors == ()


def test_the_file_gives_the_webhooks_and_the_defaults(registry_dir: RegistryDir) -> None:
    registry_dir.write(
        "config/alerts.yaml",
        """
        webhooks:
          - name: ops
            url: https://hooks.example.com/orch
          - name: team_slack
            url: ${SLACK_WEBHOOK_URL}
            format: slack
            events: [task_failed, run_stuck]
            timeout_s: 2
        stuck_after_s: 2h
        """,
    )
    registry_dir.env["SLACK_WEBHOOK_URL"] = "https://hooks.slack.com" + SECRET_PATH
    registry = registry_dir.load()
    assert registry.errors == () and registry.warnings == ()
    alerts = registry.alerts
    assert alerts is not None
    ops, slack = alerts.webhooks
    assert (ops.format, ops.events, ops.timeout_s) == ("json", ALERT_EVENTS, 5)
    assert (slack.format, slack.events, slack.timeout_s) == (
        "slack",
        ("task_failed", "run_stuck"),
        2,
    )
    assert (alerts.retries, alerts.backoff_s, alerts.stuck_after_s) == (3, 2, 7200)
    assert slack.url == "${SLACK_WEBHOOK_URL}"  # read when posting, not kept in the model


def test_every_mistake_names_the_file_and_the_key(registry_dir: RegistryDir) -> None:
    registry_dir.write(
        "config/alerts.yaml",
        f"""
        webhooks:
          - name: Ops Team
            url: ftp://hooks.example.com{SECRET_PATH}
            format: teams
            events: [task_failed, everything]
            timeout_s: 0
          - name: broken_var
            url: https://example.com/${{1BAD}}
          - name: open_var
            url: https://example.com/${{OPEN
        retries: -1
        stuck_after_s: soon
        colour: red
        """,
    )
    registry = registry_dir.load()
    assert registry.alerts is None
    found = {(e.file.rsplit("/", 1)[-1], e.key) for e in registry.errors}
    assert found == {
        ("alerts.yaml", "webhooks[0].name"),
        ("alerts.yaml", "webhooks[0].url"),
        ("alerts.yaml", "webhooks[0].format"),
        ("alerts.yaml", "webhooks[0].events[1]"),
        ("alerts.yaml", "webhooks[0].timeout_s"),
        ("alerts.yaml", "webhooks[1].url"),
        ("alerts.yaml", "webhooks[2].url"),
        ("alerts.yaml", "retries"),
        ("alerts.yaml", "stuck_after_s"),
        ("alerts.yaml", "colour"),
    }
    assert all(error.line for error in registry.errors)
    assert not any(SECRET_PATH in str(error) for error in registry.errors)
    assert registry.config_errors == ()  # agents and pools load: tasks still run


def test_webhook_names_differ_and_one_is_needed(registry_dir: RegistryDir) -> None:
    twice = "webhooks:\n" + "  - {name: ops, url: 'https://a.example'}\n" * 2
    registry_dir.write("config/alerts.yaml", twice)
    assert errors_of(registry_dir) == {("alerts.yaml", "webhooks")}
    registry_dir.write("config/alerts.yaml", "webhooks: []\n")
    assert errors_of(registry_dir) == {("alerts.yaml", "webhooks")}


def test_an_unset_variable_is_a_warning_not_an_error(registry_dir: RegistryDir) -> None:
    registry_dir.write(
        "config/alerts.yaml", "webhooks:\n  - {name: ops, url: '${ORCH_TEST_UNSET_HOOK}'}\n"
    )
    registry = registry_dir.load()
    assert registry.errors == () and registry.alerts is not None
    (warning,) = registry.warnings
    assert "alerts.yaml" in warning and "${ORCH_TEST_UNSET_HOOK}" in warning and "ops" in warning


def test_placeholders_are_read_from_the_environment() -> None:
    env = {"HOST": "hooks.example.com", "TOKEN": "abc"}
    assert (
        expand_placeholders("https://${HOST}/x/${TOKEN}", env) == "https://hooks.example.com/x/abc"
    )
    try:
        expand_placeholders("https://${HOST}/${MISSING}", env)
    except KeyError as exc:
        assert exc.args == ("MISSING",)
    else:
        raise AssertionError("an unset variable must be refused")
