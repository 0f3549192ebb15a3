"""Tests for orchestration.process (run_process, the groups of dead callers), against real child
processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from orchestration.process import (
    ExecutableNotFoundError,
    ProcessResult,
    kill_process_group,
    process_start_time,
    run_process,
)
from orchestration.workspace.sandbox import Sandbox, sandbox_program

PYTHON = sys.executable


def _child_env(**extra: str) -> dict[str, str]:
    """A minimal, explicit environment for a child process."""
    return {"PATH": os.environ.get("PATH", os.defpath), **extra}


def _python(code: str, *args: str) -> list[str]:
    return [PYTHON, "-c", textwrap.dedent(code), *args]


def _is_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie awaiting its reaper counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def _wait_until_dead(pid: int, within_s: float = 3.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not _is_alive(pid):
            return True
        time.sleep(0.02)
    return not _is_alive(pid)


# A child that ignores SIGTERM, starts a grandchild (also ignoring SIGTERM) that records its pid
# in argv[1], waits for that file, then hangs. Only SIGKILL to the whole group ends both.
_STUBBORN_PARENT = """
    import os, signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pid_file = sys.argv[1]
    grandchild = (
        "import os, signal, sys, time\\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
        "tmp = sys.argv[1] + '.tmp'\\n"
        "open(tmp, 'w').write(str(os.getpid()))\\n"
        "os.replace(tmp, sys.argv[1])\\n"
        "time.sleep(600)\\n"
    )
    subprocess.Popen([sys.executable, "-c", grandchild, pid_file])
    while not os.path.exists(pid_file):
        time.sleep(0.01)
    print("ready", os.getpid(), flush=True)
    while True:
        time.sleep(1)
"""


@pytest.fixture
def stubborn_pid_file(tmp_path: Path) -> Iterator[Path]:
    """Where the stubborn grandchild writes its pid; kills it afterwards if a test failed."""
    pid_file = tmp_path / "grandchild.pid"
    yield pid_file
    if pid_file.exists():
        pid = int(pid_file.read_text())
        if _is_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_successful_run_captures_stdout_stderr_and_cwd(tmp_path: Path) -> None:
    result = run_process(
        _python("import os, sys; print(os.getcwd()); print('to stderr', file=sys.stderr)"),
        cwd=tmp_path,
        env=_child_env(),
        timeout_s=10,
    )
    assert result.ok
    assert result.returncode == 0
    assert not result.timed_out
    assert not result.truncated
    assert Path(result.stdout.strip()).resolve() == tmp_path.resolve()
    assert result.stderr == "to stderr\n"
    assert result.argv[0] == PYTHON


def test_env_is_exactly_what_was_passed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_TEST_LEAKED_FROM_PARENT", "secret")
    env = _child_env(ORCH_TEST_GIVEN="given value")
    result = run_process(
        _python("import json, os; print(json.dumps(dict(os.environ)))"),
        cwd=tmp_path,
        env=env,
        timeout_s=10,
    )
    assert result.ok, result.tail()
    child_env = json.loads(result.stdout)
    assert "ORCH_TEST_LEAKED_FROM_PARENT" not in child_env
    assert {key: child_env.get(key) for key in env} == env
    # Python itself may add LC_CTYPE (PEP 538 locale coercion); nothing else may appear.
    assert set(child_env) - set(env) <= {"LC_CTYPE"}


def test_argv_reaches_the_child_verbatim_as_one_argument(tmp_path: Path) -> None:
    nasty = 'it\'s "quoted" $(touch pwned) `touch pwned2` ; rm -rf / && echo $HOME\nnext line\t|*?'
    payload = nasty + "x" * (100 * 1024 - len(nasty))
    result = run_process(
        _python("import json, sys; print(json.dumps(sys.argv[1:]))", payload),
        cwd=tmp_path,
        env=_child_env(),
        timeout_s=10,
    )
    assert result.ok, result.tail()
    assert json.loads(result.stdout) == [payload]
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "pwned2").exists()


def test_missing_executable_raises_naming_it_and_the_path(tmp_path: Path) -> None:
    with pytest.raises(ExecutableNotFoundError) as excinfo:
        run_process(
            ["orch-no-such-program-xyz", "--help"],
            cwd=tmp_path,
            env={"PATH": "/nonexistent/bin:/also/missing"},
            timeout_s=10,
        )
    message = str(excinfo.value)
    assert "orch-no-such-program-xyz" in message
    assert "/nonexistent/bin:/also/missing" in message


def test_executable_is_looked_up_on_the_childs_path_not_ours(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "orch-private-tool"
    tool.write_text('#!/bin/sh\necho private tool ran with "$1"\n')
    tool.chmod(0o755)

    result = run_process(
        ["orch-private-tool", "arg"], cwd=tmp_path, env={"PATH": str(bin_dir)}, timeout_s=10
    )
    assert result.ok, result.tail()
    assert result.stdout == "private tool ran with arg\n"

    # "sleep" is on our PATH but not on the child's.
    with pytest.raises(ExecutableNotFoundError, match="sleep"):
        run_process(["sleep", "0"], cwd=tmp_path, env={"PATH": str(bin_dir)}, timeout_s=10)


def test_relative_program_path_is_resolved_against_cwd(tmp_path: Path) -> None:
    tool = tmp_path / "run-me"
    tool.write_text("#!/bin/sh\necho ran\n")
    tool.chmod(0o755)
    result = run_process(["./run-me"], cwd=tmp_path, env={"PATH": "/nonexistent"}, timeout_s=10)
    assert result.ok, result.tail()
    assert result.stdout == "ran\n"


def test_non_zero_exit_is_reported_not_raised(tmp_path: Path) -> None:
    result = run_process(
        _python("import sys; print('partial'); sys.stderr.write('boom: it broke\\n'); sys.exit(3)"),
        cwd=tmp_path,
        env=_child_env(),
        timeout_s=10,
    )
    assert result.returncode == 3
    assert not result.ok
    assert not result.timed_out
    assert "boom: it broke" in result.tail()
    assert result.tail().startswith("partial")


def test_output_cap_keeps_head_and_tail_of_each_stream(tmp_path: Path) -> None:
    code = """
        import sys
        sys.stdout.write("HEAD-OUT" + "o" * 50_000 + "TAIL-OUT")
        sys.stderr.write("HEAD-ERR" + "e" * 50_000 + "TAIL-ERR")
    """
    result = run_process(
        _python(code), cwd=tmp_path, env=_child_env(), timeout_s=10, output_cap_bytes=1000
    )
    assert result.ok
    assert result.truncated
    for stream, tag in ((result.stdout, "OUT"), (result.stderr, "ERR")):
        total = len(f"HEAD-{tag}") + 50_000 + len(f"TAIL-{tag}")
        assert stream.startswith(f"HEAD-{tag}")
        assert stream.endswith(f"TAIL-{tag}")
        assert f"\n[... {total - 1000} bytes omitted ...]\n" in stream
        head, _, tail = stream.partition("\n[...")
        assert len(head) == 500
        assert len(tail.split("...]\n", 1)[1]) == 500


def test_output_within_cap_is_not_truncated(tmp_path: Path) -> None:
    result = run_process(
        _python("print('é' * 100)"),
        cwd=tmp_path,
        env=_child_env(PYTHONIOENCODING="utf-8"),
        timeout_s=10,
        output_cap_bytes=1000,
    )
    assert not result.truncated
    assert result.stdout == "é" * 100 + "\n"


def test_chatty_child_on_both_streams_does_not_deadlock(tmp_path: Path) -> None:
    code = """
        import sys
        line = "x" * 1023 + "\\n"
        for _ in range(4096):
            sys.stdout.write(line)
            sys.stderr.write(line)
    """
    result = run_process(
        _python(code), cwd=tmp_path, env=_child_env(), timeout_s=15, output_cap_bytes=10_000
    )
    assert result.ok, result.tail()
    assert result.truncated
    assert "[... 4184304 bytes omitted ...]" in result.stdout


def test_invalid_utf8_is_replaced_not_raised(tmp_path: Path) -> None:
    result = run_process(
        _python("import sys; sys.stdout.buffer.write(b'ok \\xff\\xfe end')"),
        cwd=tmp_path,
        env=_child_env(),
        timeout_s=10,
    )
    assert result.stdout == "ok \ufffd\ufffd end"


def test_stdin_text_is_fed_to_the_child(tmp_path: Path) -> None:
    text = "first line\nsecond — line\n" * 20_000
    result = run_process(
        _python("import sys; data = sys.stdin.read(); print(len(data)); print(data[:10])"),
        cwd=tmp_path,
        env=_child_env(PYTHONIOENCODING="utf-8"),
        timeout_s=10,
        stdin_text=text,
    )
    assert result.ok, result.tail()
    assert result.stdout == f"{len(text)}\nfirst line\n"


def test_stdin_is_empty_when_no_text_given(tmp_path: Path) -> None:
    result = run_process(
        _python("import sys; print(repr(sys.stdin.read()))"),
        cwd=tmp_path,
        env=_child_env(),
        timeout_s=5,
    )
    assert result.stdout == "''\n"


def test_timeout_kills_a_child_ignoring_sigterm_and_its_grandchild(
    tmp_path: Path, stubborn_pid_file: Path
) -> None:
    result = run_process(
        _python(_STUBBORN_PARENT, str(stubborn_pid_file)),
        cwd=tmp_path,
        env=_child_env(),
        timeout_s=1.5,
        kill_grace_s=0.5,
    )
    assert result.timed_out
    assert not result.ok
    assert result.returncode == -signal.SIGKILL
    assert result.stdout.startswith("ready")
    assert 1.9 <= result.duration_s < 6
    child_pid = int(result.stdout.split()[1])
    grandchild_pid = int(stubborn_pid_file.read_text())
    assert _wait_until_dead(grandchild_pid), f"grandchild {grandchild_pid} survived the timeout"
    assert not _is_alive(child_pid)


# `sleep`, made to honour SIGTERM whatever it inherits: a disposition of "ignore" and a blocked
# signal pass through exec, and an earlier test in the same process (Dagster code run in
# process) may leave SIGTERM so.
_HONOURS_SIGTERM = """
    import os, signal
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    os.execvp("sleep", ["sleep", "30"])
"""


def test_timeout_with_a_child_that_honours_sigterm(tmp_path: Path) -> None:
    result = run_process(
        _python(_HONOURS_SIGTERM), cwd=tmp_path, env=_child_env(), timeout_s=0.5, kill_grace_s=5
    )
    assert result.timed_out
    assert result.returncode == -signal.SIGTERM
    assert result.duration_s < 3  # did not wait out the grace period


class _Interrupted(Exception):
    """Stands in for the exception Dagster raises in the run's thread when a run is terminated."""


def test_exception_in_caller_kills_the_whole_group(tmp_path: Path, stubborn_pid_file: Path) -> None:
    def raise_interrupted(signum: int, frame: object) -> None:
        raise _Interrupted

    previous = signal.signal(signal.SIGUSR1, raise_interrupted)
    timer = threading.Timer(1.0, os.kill, args=(os.getpid(), signal.SIGUSR1))
    try:
        timer.start()
        with pytest.raises(_Interrupted):
            run_process(
                _python(_STUBBORN_PARENT, str(stubborn_pid_file)),
                cwd=tmp_path,
                env=_child_env(),
                timeout_s=30,
                kill_grace_s=0.5,
            )
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, previous)
    grandchild_pid = int(stubborn_pid_file.read_text())
    assert _wait_until_dead(grandchild_pid), f"grandchild {grandchild_pid} survived"


def test_background_process_left_by_a_finished_child_is_killed(
    tmp_path: Path, stubborn_pid_file: Path
) -> None:
    code = """
        import os, subprocess, sys, time
        pid_file = sys.argv[1]
        sleeper = (
            "import os, sys, time\\n"
            "open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid()))\\n"
            "os.replace(sys.argv[1] + '.tmp', sys.argv[1])\\n"
            "time.sleep(600)\\n"
        )
        subprocess.Popen(
            [sys.executable, "-c", sleeper, pid_file],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while not os.path.exists(pid_file):
            time.sleep(0.01)
    """
    result = run_process(
        _python(code, str(stubborn_pid_file)), cwd=tmp_path, env=_child_env(), timeout_s=10
    )
    assert result.ok, result.tail()
    assert _wait_until_dead(int(stubborn_pid_file.read_text()))


# In the sandbox: a child ignoring SIGTERM starts a grandchild that leaves the child's session
# and group and ignores SIGTERM too (both carry argv[1], a token to find them by from outside,
# since pids inside the sandbox are not the host's), answers, then exits or hangs (argv[2]).
_SANDBOXED_ESCAPER = """
    import signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    escaper = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
    subprocess.Popen([sys.executable, "-c", escaper, sys.argv[1]], start_new_session=True)
    print("ready", flush=True)
    if sys.argv[2] == "hang":
        time.sleep(600)
"""


def _processes_holding(token: str) -> list[int]:
    """Live (not zombie) processes whose command line holds `token`."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        if token in (process.info["cmdline"] or []) and process.info["status"] != "zombie":
            found.append(process.pid)
    return found


@pytest.mark.parametrize("ending", ["hang", "exit", "interrupt"])
def test_nothing_started_in_a_sandbox_outlives_it(ending: str) -> None:
    """Timed out, finished or interrupted (a run terminated), everything in the sandbox dies
    with it, even a process that left the group (the sandbox's PID namespace ends with its
    first process)."""
    token = f"orch-sandbox-test-{uuid.uuid4().hex}"
    wrapper = Sandbox(sandbox_program(os.environ)).prefix(Path("/"))

    def run() -> ProcessResult:
        return run_process(
            _python(_SANDBOXED_ESCAPER, token, "exit" if ending == "exit" else "hang"),
            cwd=Path("/"),
            env=_child_env(),
            timeout_s=3 if ending == "hang" else 30,
            kill_grace_s=0.5,
            wrapper=wrapper,
        )

    if ending == "interrupt":

        def raise_interrupted(signum: int, frame: object) -> None:
            raise _Interrupted

        previous = signal.signal(signal.SIGUSR1, raise_interrupted)
        timer = threading.Timer(1.5, os.kill, args=(os.getpid(), signal.SIGUSR1))
        try:
            timer.start()
            with pytest.raises(_Interrupted):
                run()
        finally:
            timer.cancel()
            signal.signal(signal.SIGUSR1, previous)
    else:
        result = run()
        assert result.stdout == "ready\n", result.tail()
        assert result.timed_out is (ending == "hang")
    deadline = time.monotonic() + 5
    while _processes_holding(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_holding(token) == []


def test_duration_is_measured(tmp_path: Path) -> None:
    result = run_process(["sleep", "0.3"], cwd=tmp_path, env=_child_env(), timeout_s=10)
    assert result.ok
    assert 0.3 <= result.duration_s < 3


def test_missing_working_directory_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        run_process(["sleep", "0"], cwd=tmp_path / "does-not-exist", env=_child_env(), timeout_s=5)


def test_empty_argv_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="argv is empty"):
        run_process([], cwd=tmp_path, env=_child_env(), timeout_s=5)


def test_tail_returns_the_end_of_stdout_then_stderr() -> None:
    result = ProcessResult(
        argv=("tool",),
        returncode=1,
        stdout="out line",
        stderr="err line\n",
        timed_out=False,
        duration_s=0.1,
        truncated=False,
    )
    assert result.tail() == "out line\nerr line\n"
    assert result.tail(9) == "err line\n"
    assert result.tail(0) == ""
    assert "out line" not in repr(result)  # output stays out of reprs and logs


# --- groups left behind by a caller that died ---------------------------------------------------


@pytest.fixture
def session_leader() -> Iterator[subprocess.Popen[bytes]]:
    """A sleeping child in its own session (the leader of its own group), killed afterwards."""
    child = subprocess.Popen([PYTHON, "-c", "import time; time.sleep(600)"], start_new_session=True)
    yield child
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait(timeout=10)


def _start_in_clock_ticks(pid: int) -> float:
    """The start time as records written before psutil hold it: /proc stat field 22."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return float(stat.rsplit(")", 1)[1].split()[19])


def test_process_start_time_is_the_leaders_creation_time(
    session_leader: subprocess.Popen[bytes],
) -> None:
    started = process_start_time(session_leader.pid)
    assert started is not None
    assert abs(started - time.time()) < 60  # seconds since the epoch, not ticks since boot
    assert process_start_time(session_leader.pid) == started


def test_process_start_time_of_a_process_that_is_gone_is_none() -> None:
    child = subprocess.Popen([PYTHON, "-c", "pass"])
    child.wait(timeout=10)
    assert process_start_time(child.pid) is None


def test_group_whose_leader_start_time_does_not_match_is_not_signalled(
    session_leader: subprocess.Popen[bytes],
) -> None:
    started = process_start_time(session_leader.pid)
    assert started is not None
    assert kill_process_group(session_leader.pid, started + 1.0) is False
    assert kill_process_group(session_leader.pid, None) is False
    if Path("/proc").is_dir():  # a record written by the code before psutil
        ticks = _start_in_clock_ticks(session_leader.pid)
        assert kill_process_group(session_leader.pid, ticks) is False
    time.sleep(0.2)
    assert session_leader.poll() is None


def test_group_whose_leader_matches_is_killed(session_leader: subprocess.Popen[bytes]) -> None:
    started = process_start_time(session_leader.pid)
    assert kill_process_group(session_leader.pid, started) is True
    assert session_leader.wait(timeout=10) == -signal.SIGKILL


def test_group_whose_leader_has_exited_is_killed(stubborn_pid_file: Path) -> None:
    # The leader starts a grandchild in its group, records the grandchild's pid, and exits.
    leader = subprocess.Popen(
        _python(
            """
            import subprocess, sys
            grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            open(sys.argv[1], "w").write(str(grandchild.pid))
            """,
            str(stubborn_pid_file),
        ),
        start_new_session=True,
    )
    started = process_start_time(leader.pid)
    assert leader.wait(timeout=10) == 0
    grandchild = int(stubborn_pid_file.read_text())
    assert _is_alive(grandchild)
    assert kill_process_group(leader.pid, started) is True
    assert _wait_until_dead(grandchild)
