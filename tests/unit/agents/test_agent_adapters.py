"""Agent adapters: each output parser on realistic CLI output, the argv builder and where a
profile may put the prompt, and run_agent end to end against the stand-in `claude` CLI
(tests/support/fakes/claude: argv in, JSON out, options parsed as Claude Code parses them) and
the offline demo agent: a prompt that looks like an option reaches the agent as its prompt."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from orchestration.agents.adapters import (
    parse_agent_output,
    parse_claude_json,
    parse_codex_jsonl,
    parse_gemini_json,
    parse_text,
)
from orchestration.agents.invocation import (
    PROMPT_FILE_PATH,
    AgentRequest,
    build_argv,
    prompt_input,
    run_agent,
)
from orchestration.agents.result import AgentOutputError, AgentStatus
from orchestration.process import ProcessResult, run_process
from orchestration.registry import load_registry
from orchestration.registry.models import AgentProfile, AgentsFile
from orchestration.settings import Settings
from tests.support.paths import FAKE_CLAUDE, REPO_ROOT, path_with_fakes
from tests.support.registry import RegistryDir

CLAUDE_SUCCESS = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "duration_ms": 48213,
    "duration_api_ms": 45110,
    "num_turns": 3,
    "result": "Added input validation to parse_args and a test for it.",
    "session_id": "5f1c2d8e-7a9b-4c1d-9e2f-0a1b2c3d4e5f",
    "total_cost_usd": 0.0123,
    "usage": {
        "input_tokens": 120,
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 30000,
        "output_tokens": 850,
        "server_tool_use": {"web_search_requests": 0},
        "service_tier": "standard",
    },
}

CODEX_EVENTS = [
    {"type": "thread.started", "thread_id": "0199a213-81c0-7800-8aa1-bbab2a035a53"},
    {"type": "turn.started"},
    {
        "type": "item.completed",
        "item": {"id": "item_0", "type": "reasoning", "text": "**Looking at the parser**"},
    },
    {
        "type": "item.completed",
        "item": {
            "id": "item_1",
            "type": "command_execution",
            "command": "bash -lc ls",
            "aggregated_output": "src\ntests\n",
            "exit_code": 0,
            "status": "completed",
        },
    },
    {
        "type": "item.completed",
        "item": {
            "id": "item_2",
            "type": "agent_message",
            "text": "Fixed the off-by-one in paging.",
        },
    },
    {
        "type": "turn.completed",
        "usage": {"input_tokens": 24763, "cached_input_tokens": 24448, "output_tokens": 122},
    },
]

GEMINI_SUCCESS = {
    "response": "Refactored the config loader and updated its tests.",
    "stats": {
        "models": {
            "gemini-2.5-pro": {
                "api": {"totalRequests": 2, "totalErrors": 0, "totalLatencyMs": 5120},
                "tokens": {
                    "prompt": 4100,
                    "candidates": 310,
                    "total": 4650,
                    "cached": 0,
                    "thoughts": 240,
                    "tool": 0,
                },
            }
        },
        "tools": {"totalCalls": 1, "totalSuccess": 1, "totalFail": 0},
    },
}

#: A prompt a shell would mangle in every possible way, about 100 KB long.
TRICKY_PROMPT = (
    "Fix \"quoted\" and 'single' args; don't run $(rm -rf /) or `id` or ${HOME};\n"
    "keep {prompt} {0} {{braces}} % %s \\ backslashes, tabs\tand ümlauts ✓ intact.\n"
    "--not-a-flag -p\n"
) * 500 + "x" * 20_000


def process(
    stdout: str, *, returncode: int | None = 0, stderr: str = "", timed_out: bool = False
) -> ProcessResult:
    return ProcessResult(
        argv=("agent",),
        returncode=returncode,
        stdout=stdout,
        stderr=stderr,
        timed_out=timed_out,
        duration_s=12.5,
        truncated=False,
    )


def jsonl(events: list[dict]) -> str:
    return "".join(json.dumps(event) + "\n" for event in events)


@pytest.fixture(scope="module")
def shipped() -> AgentsFile:
    root = REPO_ROOT
    agents = load_registry(Settings(root / "projects", root / "config", root / ".orch")).agents
    assert agents is not None
    return agents


# --- Claude Code ----------------------------------------------------------------------------


def test_claude_success_is_normalised() -> None:
    result = parse_agent_output("claude_json", process(json.dumps(CLAUDE_SUCCESS)))
    assert result.status is AgentStatus.SUCCEEDED and result.ok
    assert result.summary == CLAUDE_SUCCESS["result"]
    assert result.session_id == CLAUDE_SUCCESS["session_id"]
    assert result.cost_usd == pytest.approx(0.0123)
    assert result.turns == 3
    assert result.tokens_in == 120 + 2000 + 30000
    assert result.tokens_out == 850
    assert result.duration_s == 12.5
    assert result.error is None


def test_claude_json_after_warning_lines_is_found() -> None:
    stdout = "Warning: config file is old\n" + json.dumps(CLAUDE_SUCCESS) + "\n"
    assert parse_claude_json(process(stdout)).session_id == CLAUDE_SUCCESS["session_id"]


def test_claude_is_error_fails_and_keeps_what_was_reported() -> None:
    data = {**CLAUDE_SUCCESS, "is_error": True, "result": "API Error: 529 overloaded"}
    result = parse_claude_json(process(json.dumps(data)))
    assert result.status is AgentStatus.FAILED
    assert result.session_id == CLAUDE_SUCCESS["session_id"]
    assert result.cost_usd == pytest.approx(0.0123)
    assert "agent reported an error" in result.error
    assert "529 overloaded" in result.error  # the output tail


def test_claude_error_max_turns_fails() -> None:
    data = {**CLAUDE_SUCCESS, "subtype": "error_max_turns", "num_turns": 30}
    data.pop("result")
    result = parse_claude_json(process(json.dumps(data)))
    assert result.status is AgentStatus.FAILED
    assert "error_max_turns" in result.error
    assert result.turns == 30


def test_claude_nonzero_exit_with_valid_json_fails_with_the_status() -> None:
    result = parse_agent_output(
        "claude_json", process(json.dumps(CLAUDE_SUCCESS), returncode=2, stderr="killed by hook")
    )
    assert result.status is AgentStatus.FAILED
    assert "exited with status 2" in result.error
    assert "killed by hook" in result.error
    assert result.session_id == CLAUDE_SUCCESS["session_id"]  # kept for a resume


@pytest.mark.parametrize(
    "stdout",
    [
        "",
        "not json at all",
        '{"type": "result", "subtype": "success", "result": "cut off',
        "[1, 2, 3]",
        json.dumps({"hello": "world"}),
    ],
)
def test_claude_malformed_output_raises(stdout: str) -> None:
    with pytest.raises(AgentOutputError) as raised:
        parse_agent_output("claude_json", process(stdout, stderr="stderr words"))
    assert "stderr words" in str(raised.value)


def test_unknown_output_format_raises() -> None:
    with pytest.raises(AgentOutputError, match="no parser for output format 'xml'"):
        parse_agent_output("xml", process("<x/>"))


def test_timeout_wins_over_any_output() -> None:
    result = parse_agent_output(
        "claude_json", process("partial output", returncode=-15, timed_out=True)
    )
    assert result.status is AgentStatus.TIMED_OUT
    assert "timed out after 12s" in result.error
    assert "partial output" in result.error


# --- Codex ----------------------------------------------------------------------------------


def test_codex_jsonl_success() -> None:
    result = parse_agent_output("codex_jsonl", process(jsonl(CODEX_EVENTS)))
    assert result.ok
    assert result.session_id == "0199a213-81c0-7800-8aa1-bbab2a035a53"
    assert result.summary == "Fixed the off-by-one in paging."
    assert (result.tokens_in, result.tokens_out, result.turns) == (24763, 122, 1)


def test_codex_ignores_non_json_lines() -> None:
    stdout = "Reading prompt from stdin...\n" + jsonl(CODEX_EVENTS) + "not json {\n"
    assert parse_codex_jsonl(process(stdout)).summary == "Fixed the off-by-one in paging."


def test_codex_turn_failed_fails() -> None:
    events = [
        *CODEX_EVENTS[:2],
        {"type": "turn.failed", "error": {"message": "stream disconnected before completion"}},
    ]
    result = parse_codex_jsonl(process(jsonl(events), returncode=1))
    assert result.status is AgentStatus.FAILED
    assert "stream disconnected before completion" in result.error
    assert result.session_id == "0199a213-81c0-7800-8aa1-bbab2a035a53"


def test_codex_error_event_fails() -> None:
    events = [*CODEX_EVENTS[:1], {"type": "error", "message": "Quota exceeded. Check your plan."}]
    result = parse_codex_jsonl(process(jsonl(events)))
    assert result.status is AgentStatus.FAILED
    assert "Quota exceeded" in result.error


def test_codex_without_events_is_malformed() -> None:
    with pytest.raises(AgentOutputError, match="Codex JSONL"):
        parse_agent_output("codex_jsonl", process("error: unknown flag --json\n", returncode=2))


# --- Gemini ---------------------------------------------------------------------------------


def test_gemini_json_success() -> None:
    result = parse_agent_output("gemini_json", process(json.dumps(GEMINI_SUCCESS)))
    assert result.ok
    assert result.summary == GEMINI_SUCCESS["response"]
    assert (result.tokens_in, result.tokens_out) == (4100, 310)
    assert result.model == "gemini-2.5-pro"


def test_gemini_error_fails() -> None:
    data = {
        "response": "",
        "error": {"type": "ApiError", "message": "Resource has been exhausted", "code": 429},
    }
    result = parse_gemini_json(process(json.dumps(data), returncode=1))
    assert result.status is AgentStatus.FAILED
    assert "Resource has been exhausted" in result.error


def test_gemini_malformed_output_raises() -> None:
    with pytest.raises(AgentOutputError, match="Gemini CLI"):
        parse_agent_output("gemini_json", process("Loaded cached credentials.\n"))


# --- text -----------------------------------------------------------------------------------


def test_text_success_summary_is_the_tail() -> None:
    stdout = "line\n" * 1000 + "Applied edit to app.py\n"
    result = parse_text(process(stdout))
    assert result.ok
    assert result.summary.endswith("Applied edit to app.py")
    assert len(result.summary) <= 2000


def test_text_nonzero_exit_fails_with_status_and_tail() -> None:
    result = parse_agent_output("text", process("working...\n", returncode=3, stderr="boom\n"))
    assert result.status is AgentStatus.FAILED
    assert "exited with status 3" in result.error
    assert "boom" in result.error


# --- build_argv -----------------------------------------------------------------------------

#: Prompts an option parser would read as options if they were not after `--`.
OPTION_LIKE_PROMPTS = [
    "--resume=evil",
    "--dangerously-skip-permissions",
    "- fix the bug",
    "-p",
    "--",
    "-rEVIL",
    "--output-format=text",
    "--model claude-evil",
]


def test_prompt_is_one_verbatim_argument_after_the_end_of_options(shipped: AgentsFile) -> None:
    for name in ("claude_code", "codex", "demo"):
        profile = shipped.profiles[name]
        request = AgentRequest(prompt=TRICKY_PROMPT, workdir=Path("/w"), model="m", session_id="s")
        argv = build_argv(profile, request)
        assert argv.count(TRICKY_PROMPT) == 1, name
        assert sum(TRICKY_PROMPT in part for part in argv) == 1, name
        assert argv[-2:] == ["--", TRICKY_PROMPT], name  # the options all come before `--`
        assert prompt_input(profile, request) is None, name


def test_stdin_profiles_keep_the_prompt_out_of_argv(shipped: AgentsFile) -> None:
    request = AgentRequest(TRICKY_PROMPT, Path("/w"), model="m", command=("agent",))
    for name in ("aider", "gemini", "command"):
        profile = shipped.profiles[name]
        argv = build_argv(profile, request)
        assert not any(TRICKY_PROMPT in part or "--not-a-flag" in part for part in argv), name
        assert prompt_input(profile, request) == TRICKY_PROMPT, name
    aider = build_argv(shipped.profiles["aider"], request)
    assert aider[aider.index("--message-file") + 1] == PROMPT_FILE_PATH == "/dev/stdin"


def test_claude_argv_without_model_or_session(shipped: AgentsFile) -> None:
    argv = build_argv(shipped.profiles["claude_code"], AgentRequest("do it", Path("/w")))
    assert argv == ["claude", "-p", "--output-format", "stream-json", "--verbose", "--", "do it"]


def test_model_and_resume_args_go_before_the_end_of_options(shipped: AgentsFile) -> None:
    request = AgentRequest("do it", Path("/w"), model="opus", session_id="abc-123")
    argv = build_argv(shipped.profiles["claude_code"], request)
    assert argv == [
        *("claude", "-p", "--output-format", "stream-json", "--verbose"),
        *("--model", "opus", "--resume", "abc-123"),
        *("--", "do it"),
    ]


def test_a_budget_cap_goes_before_the_end_of_options_and_only_when_there_is_one(
    shipped: AgentsFile,
) -> None:
    capped = AgentRequest("do it", Path("/w"), session_id="abc", budget_usd=0.4)
    argv = build_argv(shipped.profiles["claude_code"], capped)
    assert argv == [
        *("claude", "-p", "--output-format", "stream-json", "--verbose"),
        *("--resume", "abc", "--max-budget-usd", "0.40"),
        *("--", "do it"),
    ]
    assert "--max-budget-usd" not in build_argv(shipped.profiles["codex"], capped)
    assert "--max-budget-usd" not in build_argv(
        shipped.profiles["claude_code"], AgentRequest("do it", Path("/w"))
    )


def test_model_args_go_last_without_an_end_of_options(shipped: AgentsFile) -> None:
    argv = build_argv(shipped.profiles["gemini"], AgentRequest("do it", Path("/w"), model="pro"))
    assert argv == ["gemini", "--output-format", "json", "--model", "pro"]


def test_resume_args_need_a_profile_that_has_them(shipped: AgentsFile) -> None:
    request = AgentRequest("do it", Path("/w"), session_id="abc-123")
    argv = build_argv(shipped.profiles["codex"], request)  # codex has no resume_args
    assert "abc-123" not in argv and "--resume" not in argv


def test_command_expands_to_the_whole_agent_command(shipped: AgentsFile) -> None:
    request = AgentRequest(
        "fix it", Path("/w"), command=("python3", "tools/agent.py", "--flag=a b")
    )
    argv = build_argv(shipped.profiles["command"], request)
    assert argv == ["python3", "tools/agent.py", "--flag=a b"]
    assert prompt_input(shipped.profiles["command"], request) == "fix it"


def test_python_and_workdir_placeholders(shipped: AgentsFile) -> None:
    argv = build_argv(shipped.profiles["demo"], AgentRequest("p", Path("/w")))
    assert argv[0] == sys.executable
    profile = AgentProfile(argv=("tool", "--cwd={workdir}", "--", "{prompt}"), output="text")
    assert build_argv(profile, AgentRequest("p", Path("/some/dir"))) == [
        "tool",
        "--cwd=/some/dir",
        "--",
        "p",
    ]


# --- where a profile may put the prompt -----------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"argv": ("claude", "-p", "{prompt}")}, "must come after a '--' element"),
        ({"argv": ("claude", "{prompt}", "--")}, "must come after a '--' element"),
        ({"argv": ("aider", "--message={prompt}")}, "must be an argv element of its own"),
        ({"argv": ("tool", "--", "x{prompt}")}, "must be an argv element of its own"),
        ({"argv": ("tool", "--file={prompt_file}")}, "must be an argv element of its own"),
        (
            {"argv": ("tool", "--", "{prompt}"), "model_args": ("--model", "{prompt}")},
            "model_args: the prompt cannot be passed in model_args",
        ),
        (
            {"argv": ("tool", "--", "{prompt}"), "resume_args": ("-f", "{prompt_file}")},
            "resume_args: the prompt cannot be passed in resume_args",
        ),
        (
            {"argv": ("tool", "--", "{prompt}"), "resume_args": ("--", "{session_id}")},
            "resume_args: '--' cannot appear here",
        ),
        ({"argv": ("tool",)}, "exactly one way"),
        ({"argv": ("tool", "--", "{prompt}"), "prompt_stdin": True}, "exactly one way"),
        ({"argv": ("tool", "{prompt_file}", "--", "{prompt}")}, "exactly one way"),
    ],
)
def test_a_profile_that_lets_an_option_parser_read_the_prompt_is_refused(
    fields: dict, expected: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(expected)):
        AgentProfile(output="text", **fields)


@pytest.mark.parametrize(
    "fields",
    [
        {"argv": ("claude", "-p", "--", "{prompt}")},
        {"argv": ("gemini",), "prompt_stdin": True},
        {"argv": ("aider", "--message-file", "{prompt_file}")},
        {"argv": ("{command}",), "prompt_stdin": True},
    ],
)
def test_the_prompt_after_the_end_of_options_or_on_stdin_is_accepted(fields: dict) -> None:
    AgentProfile(output="text", **fields)


def test_a_misplaced_prompt_in_agents_yaml_names_the_profile(registry_dir: RegistryDir) -> None:
    agents = registry_dir.write(
        "config/agents.yaml",
        """
        profiles:
          demo:
            argv: [demo, --, "{prompt}"]
            output: text
          careless:
            argv: [claude, -p, "{prompt}", --output-format, json]
            output: claude_json
        """,
    )
    registry = registry_dir.load()
    [error] = registry.errors
    assert Path(error.file).resolve() == agents.resolve()
    assert error.key == "profiles.careless"
    assert error.line == 5
    assert "argv: {prompt} must come after a '--' element" in error.message


# --- run_agent with real programs -----------------------------------------------------------


@pytest.fixture
def fake_agent(tmp_path: Path, shipped: AgentsFile) -> tuple[AgentProfile, dict[str, str], Path]:
    """The shipped `claude_code` profile with the stand-in `claude` first on PATH, logging
    what it got to `fake_claude.jsonl`."""
    env = {
        "PATH": path_with_fakes(f"/usr/bin{os.pathsep}/bin"),
        "FAKE_CLAUDE_LOG": str(tmp_path / "fake_claude.jsonl"),
    }
    work = tmp_path / "work"
    work.mkdir()
    return shipped.profiles["claude_code"], env, work


def agent_start(env: dict[str, str]) -> dict:
    """The stand-in's start line: its argv, its session, ..."""
    lines = Path(env["FAKE_CLAUDE_LOG"]).read_text(encoding="utf-8").splitlines()
    (start,) = [entry for entry in map(json.loads, lines) if entry["event"] == "start"]
    return start


def test_tricky_prompt_arrives_byte_identical(fake_agent) -> None:
    profile, env, work = fake_agent
    assert 100_000 <= len(TRICKY_PROMPT.encode()) < 128 * 1024
    result = run_agent(profile, AgentRequest(TRICKY_PROMPT, work), env=env, timeout_s=30)
    assert result.ok, result.error
    start = agent_start(env)
    received = start["argv"][1:]
    assert received == ["-p", "--output-format", "stream-json", "--verbose", "--", TRICKY_PROMPT]
    assert start["prompt"].encode("utf-8") == TRICKY_PROMPT.encode("utf-8")
    assert result.session_id == start["session_id"]


@pytest.mark.parametrize("prompt", OPTION_LIKE_PROMPTS)
def test_an_option_like_prompt_reaches_claude_as_its_prompt(fake_agent, prompt: str) -> None:
    profile, env, work = fake_agent
    result = run_agent(profile, AgentRequest(prompt, work), env=env, timeout_s=30)
    assert result.ok, result.error
    start = agent_start(env)
    assert start["prompt"] == prompt
    assert "resume" not in start["options"]  # no session was resumed...
    assert "dangerously_skip_permissions" not in start["options"]  # ...no permission dropped
    assert start["options"]["output_format"] == "stream-json"
    assert start["options"]["model"] == "claude-fake-1"
    assert result.session_id not in (None, "evil", "EVIL")
    assert (work / "CHANGES.md").read_text(encoding="utf-8") == f"- {prompt}\n"


def test_the_stand_in_reads_options_as_claude_code_does(tmp_path: Path) -> None:
    """The old template, `claude -p PROMPT ...`, let a prompt be read as an option: the
    stand-in, like Claude Code, resumes the session a `--resume=...` prompt names."""
    env = {"PATH": path_with_fakes(f"/usr/bin{os.pathsep}/bin")}
    old_shape = ["claude", "-p", "--resume=evil", "--output-format", "json"]
    result = run_process(old_shape, cwd=tmp_path, env=env, timeout_s=30, stdin_text="NOOP x")
    assert json.loads(result.stdout)["session_id"] == "evil"
    dashed = run_process(
        ["claude", "-p", "- fix the bug", "--output-format", "json"],
        cwd=tmp_path,
        env=env,
        timeout_s=30,
    )
    assert dashed.returncode == 1
    assert "unknown option '- fix the bug'" in dashed.stderr


@pytest.mark.parametrize("prompt", ["--resume=evil", "- fix the bug\n- and this"])
def test_the_command_profile_gives_the_prompt_on_stdin(
    fake_agent, shipped: AgentsFile, prompt: str
) -> None:
    _, env, work = fake_agent
    request = AgentRequest(prompt, work, command=(sys.executable, str(FAKE_CLAUDE)))
    result = run_agent(shipped.profiles["command"], request, env=env, timeout_s=30)
    assert result.ok, result.error
    start = agent_start(env)
    assert start["argv"][1:] == []
    assert start["prompt"] == prompt
    assert "resume" not in start["options"]


def test_a_prompt_file_is_read_from_stdin(tmp_path: Path) -> None:
    """`{prompt_file}` (aider's `--message-file`) is a path that holds the prompt."""
    reader = "import sys; sys.stdout.write(open(sys.argv[-1], encoding='utf-8').read())"
    profile = AgentProfile(
        argv=(sys.executable, "-c", reader, "--message-file", "{prompt_file}"), output="text"
    )
    prompt = "--message=x\n- fix the bug ✓"
    result = run_agent(
        profile, AgentRequest(prompt, tmp_path), env={"PATH": os.environ["PATH"]}, timeout_s=30
    )
    assert result.ok, result.error
    assert result.summary == prompt.strip()
    assert list(tmp_path.iterdir()) == []  # no prompt file left behind


def test_resume_reaches_the_program(fake_agent) -> None:
    profile, env, work = fake_agent
    result = run_agent(profile, AgentRequest("go", work, session_id="s-9"), env=env, timeout_s=30)
    argv = agent_start(env)["argv"]
    assert argv[-4:] == ["--resume", "s-9", "--", "go"]
    assert result.session_id == "s-9"


def test_malformed_output_becomes_a_failed_result(fake_agent) -> None:
    profile, env, work = fake_agent
    result = run_agent(profile, AgentRequest("go GARBAGE", work), env=env, timeout_s=30)
    assert result.status is AgentStatus.FAILED
    assert "malformed" in result.error
    assert "<<<GARBAGE>>>" in result.error  # the output tail


def test_nonzero_exit_with_valid_json_fails(fake_agent) -> None:
    profile, env, work = fake_agent
    result = run_agent(profile, AgentRequest("go STATUS4", work), env=env, timeout_s=30)
    assert result.status is AgentStatus.FAILED
    assert "exited with status 4" in result.error


def test_timeout_is_timed_out(fake_agent) -> None:
    profile, env, work = fake_agent
    result = run_agent(profile, AgentRequest("go SLEEP30", work), env=env, timeout_s=0.5)
    assert result.status is AgentStatus.TIMED_OUT
    assert "timed out" in result.error
    assert result.duration_s < 10


def test_missing_binary_fails_naming_it(tmp_path: Path) -> None:
    profile = AgentProfile(argv=("no-such-agent-cli", "--", "{prompt}"), output="text")
    result = run_agent(
        profile, AgentRequest("go", tmp_path), env={"PATH": str(tmp_path)}, timeout_s=5
    )
    assert result.status is AgentStatus.FAILED
    assert "agent binary not found" in result.error
    assert "no-such-agent-cli" in result.error


def test_prompt_too_long_for_one_argument_is_a_failed_result(fake_agent) -> None:
    profile, env, work = fake_agent
    prompt = "y" * 200_000  # Linux caps one argv element at 128 KiB (MAX_ARG_STRLEN)
    result = run_agent(profile, AgentRequest(prompt, work), env=env, timeout_s=30)
    assert result.status is AgentStatus.FAILED


# --- the demo agent -------------------------------------------------------------------------


def demo_argv(prompt: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "orchestration.agents.demo",
        "-p",
        "--output-format",
        "json",
        *extra,
        "--",
        prompt,
    ]


def test_demo_agent_writes_a_note_and_speaks_claude_json(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    prompt = "Add a README section\nwith `code` and $(stuff)"
    result = run_process(demo_argv(prompt), cwd=tmp_path, env=env, timeout_s=60)
    assert result.ok, result.tail()
    parsed = parse_claude_json(result)
    assert parsed.ok
    assert parsed.session_id
    assert parsed.cost_usd == 0.0
    notes = list((tmp_path / "orch-demo").glob("*.md"))
    assert len(notes) == 1
    assert prompt in notes[0].read_text(encoding="utf-8")
    assert notes[0].name in parsed.summary


def test_demo_agent_resume_keeps_the_session(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    result = run_process(
        demo_argv("again", "--resume", "sess-xyz"), cwd=tmp_path, env=env, timeout_s=60
    )
    assert parse_claude_json(result).session_id == "sess-xyz"


def test_demo_profile_end_to_end(shipped: AgentsFile, tmp_path: Path) -> None:
    result = run_agent(
        shipped.profiles["demo"],
        AgentRequest("demo task", tmp_path, session_id="keep-me"),
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        timeout_s=60,
    )
    assert result.ok, result.error
    assert result.session_id == "keep-me"
    assert (tmp_path / "orch-demo" / "demo-task.md").is_file()


@pytest.mark.parametrize("prompt", OPTION_LIKE_PROMPTS)
def test_the_demo_agent_takes_an_option_like_prompt_as_its_prompt(
    shipped: AgentsFile, tmp_path: Path, prompt: str
) -> None:
    result = run_agent(
        shipped.profiles["demo"],
        AgentRequest(prompt, tmp_path),
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        timeout_s=60,
    )
    assert result.ok, result.error
    assert result.session_id not in (None, "evil", "EVIL")
    [note] = (tmp_path / "orch-demo").glob("*.md")
    assert f"worked on:\n\n{prompt}\n" in note.read_text(encoding="utf-8")


def test_the_demo_agent_reads_the_prompt_from_stdin(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    argv = [sys.executable, "-m", "orchestration.agents.demo", "-p", "--output-format", "json"]
    result = run_process(argv, cwd=tmp_path, env=env, timeout_s=60, stdin_text="--resume=x")
    assert parse_claude_json(result).session_id != "x"
    [note] = (tmp_path / "orch-demo").glob("*.md")
    assert "--resume=x" in note.read_text(encoding="utf-8")
