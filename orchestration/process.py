"""The one helper through which the package runs child processes (agent CLIs, test commands).

Why process groups: an agent CLI that times out has usually started children of its own
(shells, compilers, test runners, language servers). Killing only the direct child would leave
those grandchildren running, holding the workspace, the output pipes and CPU. So every child is
started in its own session, which makes it the leader of a new process group, and on timeout,
on any exception in the caller (Ctrl-C, a Dagster run being terminated) and after a normal exit
the whole group is signalled. Anything the child leaves running in its group when it exits is
killed too: a verify command must not leave a server behind.

The group is signalled while its leader is still an unreaped zombie (we wait with ``WNOWAIT``),
so the group id cannot have been recycled for an unrelated process when we send the signal.

A caller that dies cannot do that, so it records the group id and its leader's start time
(``process_start_time``, psutil's creation time); ``kill_process_group`` later kills the group
only if that id still belongs to the same leader, or to no process at all.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

__all__ = [
    "ExecutableNotFoundError",
    "ProcessResult",
    "find_executable",
    "kill_process_group",
    "process_start_time",
    "run_process",
]

_READ_CHUNK_BYTES = 64 * 1024
# After the group has been killed, how long to wait for the output pipes to reach end-of-file.
# Only a process that left the group (its own setsid) can hold them open longer.
_PIPE_DRAIN_TIMEOUT_S = 2.0
# How long to wait for the killed leader to be reaped before giving up (returncode None).
_REAP_TIMEOUT_S = 5.0
_MAX_POLL_INTERVAL_S = 0.05


class ExecutableNotFoundError(Exception):
    """The program named by ``argv[0]`` is not an executable file on the child's ``PATH``."""

    def __init__(self, program: str, search_path: str) -> None:
        self.program = program
        self.search_path = search_path
        if os.sep in program:
            where = "at that path"
        else:
            where = f"on the child's PATH {search_path!r}"
        super().__init__(
            f"Cannot run {program!r}: no executable file found {where}. "
            "Install the program or fix PATH in the environment given to the process."
        )


@dataclass(frozen=True)
class ProcessResult:
    """What a finished child process did: exit status, captured output and timing."""

    argv: tuple[str, ...]
    returncode: int | None  # None only if the process could not be reaped
    stdout: str = field(repr=False)  # utf-8 with errors="replace", capped
    stderr: str = field(repr=False)
    timed_out: bool
    duration_s: float
    truncated: bool  # True if stdout or stderr exceeded the cap

    @property
    def ok(self) -> bool:
        """True when the process exited with status 0 before its timeout."""
        return self.returncode == 0 and not self.timed_out

    def tail(self, max_chars: int = 2000) -> str:
        """The last ``max_chars`` of stdout followed by stderr, for error messages."""
        if max_chars <= 0:
            return ""
        separator = "\n" if self.stdout and self.stderr and not self.stdout.endswith("\n") else ""
        combined = f"{self.stdout}{separator}{self.stderr}"
        return combined[-max_chars:]


class _CappedBuffer:
    """Keeps the first and last halves of a byte stream, counting what falls in between."""

    def __init__(self, cap_bytes: int) -> None:
        self._head_cap = cap_bytes // 2
        self._tail_cap = cap_bytes - self._head_cap
        self._head = bytearray()
        self._tail = bytearray()
        self._total = 0
        self._lock = threading.Lock()

    def feed(self, chunk: bytes) -> None:
        with self._lock:
            self._total += len(chunk)
            room = self._head_cap - len(self._head)
            if room > 0:
                self._head += chunk[:room]
                chunk = chunk[room:]
            if not chunk or self._tail_cap == 0:
                return
            self._tail += chunk
            excess = len(self._tail) - self._tail_cap
            if excess > 0:
                del self._tail[:excess]

    def render(self) -> tuple[str, bool]:
        """The kept text, with a marker where bytes were dropped, and whether any were."""
        with self._lock:
            omitted = self._total - len(self._head) - len(self._tail)
            if omitted <= 0:
                # Nothing was dropped: head and tail are contiguous, so decode them as one.
                return bytes(self._head + self._tail).decode("utf-8", errors="replace"), False
            head = self._head.decode("utf-8", errors="replace")
            tail = self._tail.decode("utf-8", errors="replace")
        return f"{head}\n[... {omitted} bytes omitted ...]\n{tail}", True


def _drain(pipe: IO[bytes], buffer: _CappedBuffer) -> None:
    """Read a pipe to end-of-file into ``buffer``; runs in its own thread."""
    with pipe:
        while chunk := pipe.read(_READ_CHUNK_BYTES):
            buffer.feed(chunk)


def _feed_stdin(pipe: IO[bytes], data: bytes) -> None:
    """Write ``data`` to the child's stdin and close it; runs in its own thread."""
    try:
        with pipe:
            view = memoryview(data)
            while view:
                written = pipe.write(view)
                view = view[written or 0 :]
    except (BrokenPipeError, ConnectionResetError):
        pass  # the child stopped reading; its exit status tells the story


def find_executable(program: str, *, cwd: Path, env: Mapping[str, str]) -> str:
    """Find ``program`` the way the child's environment would, or raise."""
    search_path = env.get("PATH", os.defpath)
    if os.sep in program:
        candidate = Path(program) if os.path.isabs(program) else cwd / program
        found = shutil.which(str(candidate))
    else:
        found = shutil.which(program, path=search_path) if search_path else None
    if found is None:
        raise ExecutableNotFoundError(program, search_path)
    return found


def _wait_for_exit(process: subprocess.Popen[bytes], deadline: float | None) -> bool:
    """Wait until the child has exited (without reaping it), or ``deadline`` passes.

    Returns whether it exited. Polls, so that a signal delivered to the calling thread
    (KeyboardInterrupt, a terminated Dagster run) is raised promptly.
    """
    interval = 0.0005
    while True:
        if _has_exited(process):
            return True
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            interval = min(interval * 2, _MAX_POLL_INTERVAL_S, remaining)
        else:
            interval = min(interval * 2, _MAX_POLL_INTERVAL_S)
        time.sleep(interval)


def _has_exited(process: subprocess.Popen[bytes]) -> bool:
    if process.returncode is not None:
        return True
    if not hasattr(os, "waitid"):  # e.g. macOS: fall back to reaping
        return process.poll() is not None
    try:
        info = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True  # reaped by someone else; nothing left to wait for
    return info is not None


def _signal_group(pgid: int, signum: int) -> None:
    """Send ``signum`` to every process in the group; a group that is gone is fine."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(process: subprocess.Popen[bytes]) -> int | None:
    """Collect the exit status of the (killed) child, or None if that is impossible."""
    if hasattr(os, "waitid") and process.returncode is None:
        try:
            os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return None  # reaped elsewhere: Popen would wrongly report 0
    try:
        return process.wait(timeout=_REAP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None


def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout_s: float,
    output_cap_bytes: int = 1_000_000,
    kill_grace_s: float = 5.0,
    stdin_text: str | None = None,
    on_start: Callable[[int], None] | None = None,
    wrapper: Sequence[str] = (),
) -> ProcessResult:
    """Run ``argv`` (never through a shell) in ``cwd`` with exactly ``env`` and capture its output.

    ``env`` is the child's complete environment; ``argv[0]`` is looked up on ``env["PATH"]``.
    Output beyond ``output_cap_bytes`` per stream keeps its first and last halves. On timeout the
    child's process group gets SIGTERM, then SIGKILL after ``kill_grace_s``; the group is killed
    in every other case too, so no descendant outlives the call. Raises
    ExecutableNotFoundError if ``argv[0]`` cannot be found, and OSError if it cannot be started.
    ``on_start`` is called with the child's process group id as soon as it runs, so a caller can
    record it and kill the group should this process itself die. ``wrapper`` is a launcher
    (the sandbox's ``bwrap ... --``) that runs ``argv``: its first element is the program
    started, in the same new session; ``argv[0]`` is still looked up on ``env``'s PATH first,
    so a missing program is reported as such.
    """
    argv_tuple = tuple(argv)
    if not argv_tuple:
        raise ValueError("Cannot run a process: argv is empty; give at least the program name.")
    if timeout_s <= 0:
        raise ValueError(
            f"Cannot run {argv_tuple[0]!r}: timeout_s must be positive, not {timeout_s}."
        )
    if output_cap_bytes < 0 or kill_grace_s < 0:
        raise ValueError(
            f"Cannot run {argv_tuple[0]!r}: output_cap_bytes ({output_cap_bytes}) and "
            f"kill_grace_s ({kill_grace_s}) must not be negative."
        )
    if not cwd.is_dir():
        raise FileNotFoundError(
            f"Cannot run {argv_tuple[0]!r}: working directory {cwd} does not exist "
            "or is not a directory."
        )
    executable = find_executable(argv_tuple[0], cwd=cwd, env=env)
    command = argv_tuple
    if wrapper:
        command = (*wrapper, *argv_tuple)
        executable = wrapper[0]

    started = time.monotonic()
    try:
        process = subprocess.Popen(
            command,
            executable=executable,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL if stdin_text is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            close_fds=True,
            start_new_session=True,
        )
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"Could not start {argv_tuple[0]!r} ({executable}) in {cwd}: {exc.strerror or exc}",
        ) from exc

    # The child is its session's and group's leader, so its pid is the group id.
    pgid = process.pid
    if on_start is not None:
        try:
            on_start(pgid)
        except Exception:
            _signal_group(pgid, signal.SIGKILL)
            process.wait()
            raise
    stdout_buffer = _CappedBuffer(output_cap_bytes)
    stderr_buffer = _CappedBuffer(output_cap_bytes)
    threads: list[threading.Thread] = []
    timed_out = False
    ended: float | None = None
    try:
        assert process.stdout is not None and process.stderr is not None
        for name, pipe, buffer in (
            ("stdout", process.stdout, stdout_buffer),
            ("stderr", process.stderr, stderr_buffer),
        ):
            threads.append(
                threading.Thread(
                    target=_drain,
                    args=(pipe, buffer),
                    name=f"run_process {name} of pid {process.pid}",
                    daemon=True,
                )
            )
        if stdin_text is not None:
            assert process.stdin is not None
            threads.append(
                threading.Thread(
                    target=_feed_stdin,
                    args=(process.stdin, stdin_text.encode("utf-8")),
                    name=f"run_process stdin of pid {process.pid}",
                    daemon=True,
                )
            )
        for thread in threads:
            thread.start()

        if not _wait_for_exit(process, started + timeout_s):
            timed_out = True
            _signal_group(pgid, signal.SIGTERM)
            _wait_for_exit(process, time.monotonic() + kill_grace_s)
        ended = time.monotonic()
    finally:
        # Always, and before reaping the leader so the group id cannot have been reused.
        _signal_group(pgid, signal.SIGKILL)
        returncode = _reap(process)
        if ended is None:
            ended = time.monotonic()
        drain_deadline = time.monotonic() + _PIPE_DRAIN_TIMEOUT_S
        for thread in threads:
            thread.join(timeout=max(0.0, drain_deadline - time.monotonic()))

    stdout, stdout_truncated = stdout_buffer.render()
    stderr, stderr_truncated = stderr_buffer.render()
    return ProcessResult(
        argv=argv_tuple,
        returncode=returncode,
        stdout=stdout,
        stderr=stderr,
        timed_out=timed_out,
        duration_s=ended - started,
        truncated=stdout_truncated or stderr_truncated,
    )


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold back SIGINT while the block runs (on the main thread; elsewhere it cannot reach
    us): Dagster ends a terminated run by raising in its step at each SIGINT, and what is done
    here (committing an interrupted agent's work) must not be cut short. A SIGINT that came
    meanwhile is delivered when the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def process_start_time(pid: int) -> float | None:
    """When process `pid` started, in seconds since the epoch (psutil's creation time); None
    when it is gone or cannot be read. With the pid it identifies one process even after the id
    is reused."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def kill_process_group(pgid: int, started: float | None) -> bool:
    """SIGKILL a process group left behind by a dead caller, if its leader is still the process
    that started at `started` (from `process_start_time`) or has exited and left only the group;
    True when a signal was sent.

    Nothing is sent when `started` is unknown or does not match the live leader's: a reused id
    must never reach an unrelated process. Task records written before psutil hold the start in
    clock ticks since boot, which never equal psutil's seconds since the epoch, so a group of
    theirs whose leader still runs is left alone; so is one whose leader's start time moved with
    a step of the system clock.
    """
    if started is None:
        return False
    try:
        if psutil.Process(pgid).create_time() != started:
            return False  # the id belongs to another process now
    except psutil.ZombieProcess:
        return False  # an unreaped leader whose start cannot be read: it may not be ours
    except psutil.NoSuchProcess:
        # The leader has exited. Its id is not handed out again while its group has members,
        # so a group that still exists is the one it left (barring a reuse that also ended).
        pass
    except psutil.Error:
        return False  # cannot tell whose it is
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True
