"""Run the engine in a separate process: non-blocking, cancellable, progress read from structured lines.

The GUI never waits on the engine, and a crash of the engine cannot take Slicer down. Two transports
share one interface (`EngineRunner`): `QProcessRunner` (qt_runner.py) inside Slicer (Qt signals on the GUI thread)
and `PopenRunner` anywhere else (reader threads; `poll()` delivers events on the caller's thread),
which is what the tests drive with a small fake child. Neither imports slicer, nor qt at module level.

Progress lines follow PancreasAILib/progress.py:
    PANCREASAI_PROGRESS {"stage": "stage1", "fraction": 0.5, "message": "...", "time": 1700000000.0}
Errors follow PancreasAILib/cli/main.py, on stderr:
    pancreasai segment: error: PROBLEM
      fix: FIX
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

PROGRESS_PREFIX = "PANCREASAI_PROGRESS "  # the same prefix as PancreasAILib.progress (kept in sync by a test)
STAGES: tuple[str, ...] = ("load", "align", "stage1", "stage2", "heatmap", "lesions", "outputs")
STAGE_TITLES: dict[str, str] = {
    "load": "Loading phases",
    "align": "Aligning phases",
    "stage1": "Finding the pancreas",
    "stage2": "Segmenting the tumour",
    "heatmap": "Computing the anomaly heatmap",
    "lesions": "Measuring lesions",
    "outputs": "Writing results",
    "synthesise": "Synthesising the demo case",
}
# Exit statuses of `pancreasai` (EPILOG in PancreasAILib/cli/main.py) and what they mean to a user.
EXIT_MEANINGS: dict[int, str] = {
    1: "The engine hit an internal error (please report it with the log).",
    2: "The engine was called with invalid arguments (please report it with the log).",
    3: "The input images cannot be used as given.",
    4: "The inputs do not belong together (different patients or studies, or a phase given twice).",
    5: "The phases could not be aligned.",
    6: "The output folder already exists.",
    7: "No pancreas was found in the images.",
    8: "The input is too large for the memory limit.",
    130: "The engine was interrupted.",
}
CANCEL_GRACE_S = 5.0  # time the engine gets to clean up after an interrupt before it is killed
STDERR_TAIL_LINES = 40


class RunState(str, Enum):
    IDLE = "idle"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class ProgressEvent:
    stage: str
    fraction: float  # within the stage, 0..1
    message: str = ""
    time: float | None = None

    @property
    def title(self) -> str:
        return STAGE_TITLES.get(self.stage, self.stage)

    @property
    def overall(self) -> float:
        """0..1 over the whole run, with every known stage weighted equally."""
        if self.stage not in STAGES:
            return max(0.0, min(1.0, self.fraction))
        index = STAGES.index(self.stage)
        return (index + max(0.0, min(1.0, self.fraction))) / len(STAGES)


@dataclass(frozen=True)
class RunOutcome:
    state: RunState
    exit_code: int | None
    message: str  # one paragraph a radiologist can act on
    log_tail: str = ""  # the last stderr lines, for the log panel and bug reports

    @property
    def ok(self) -> bool:
        return self.state is RunState.SUCCEEDED


def parse_progress_line(line: str) -> ProgressEvent | None:
    """The progress event of one stdout line, or None for any other line (malformed ones included)."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    try:
        record = json.loads(line[len(PROGRESS_PREFIX) :])
        return ProgressEvent(
            stage=str(record["stage"]),
            fraction=float(record.get("fraction", 0.0)),
            message=str(record.get("message", "")),
            time=float(record["time"]) if record.get("time") is not None else None,
        )
    except (ValueError, KeyError, TypeError):
        return None  # a garbled line must not stop the run; it still reaches the log


def parse_engine_error(stderr_text: str) -> tuple[str, str] | None:
    """(problem, fix) from the engine's "pancreasai CMD: error: PROBLEM\\n  fix: FIX" message."""
    lines = stderr_text.splitlines()
    for n in range(len(lines) - 1, -1, -1):
        head, sep, problem = lines[n].partition(": error: ")
        if sep and head.startswith("pancreasai"):
            fix = ""
            if n + 1 < len(lines) and lines[n + 1].strip().startswith("fix:"):
                fix = lines[n + 1].strip()[len("fix:") :].strip()
            return problem.strip(), fix
    return None


def describe_outcome(exit_code: int | None, stderr_text: str, *, cancelled: bool) -> RunOutcome:
    """Turn an exit status and stderr into a state and a clear message."""
    tail = "\n".join(stderr_text.splitlines()[-STDERR_TAIL_LINES:])
    if cancelled:
        return RunOutcome(
            RunState.CANCELLED, exit_code, "Stopped by the user; the scene was left unchanged.", tail
        )
    if exit_code == 0:
        return RunOutcome(RunState.SUCCEEDED, 0, "Finished.", tail)
    parsed = parse_engine_error(stderr_text)
    if parsed is not None:
        problem, fix = parsed
        message = problem + (f" What to do: {fix}" if fix else "")
    elif exit_code is None or exit_code < 0:
        how = f"killed by signal {-exit_code}" if exit_code is not None else "could not be started or crashed"
        message = (
            f"The PancreasAI engine stopped unexpectedly ({how}). This is often a lack of memory; "
            "close other programs or choose the CPU device, and report the log if it happens again."
        )
    else:
        meaning = EXIT_MEANINGS.get(exit_code, "The engine failed.")
        last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
        message = f"{meaning} (exit status {exit_code})" + (f" Last message: {last}" if last else "")
    return RunOutcome(RunState.FAILED, exit_code, message + " The scene was left unchanged.", tail)


class EngineRunner:
    """Shared state machine and line handling; subclasses move bytes (Popen threads or QProcess).

    Callbacks run on the thread that calls `poll()` (PopenRunner) or on the Qt GUI thread (QProcessRunner).
    """

    def __init__(
        self,
        on_progress: Callable[[ProgressEvent], None] | None = None,
        on_log: Callable[[str], None] | None = None,
        on_finished: Callable[[RunOutcome], None] | None = None,
    ) -> None:
        self.on_progress = on_progress
        self.on_log = on_log
        self.on_finished = on_finished
        self.state = RunState.IDLE
        self.outcome: RunOutcome | None = None
        self.last_progress: ProgressEvent | None = None
        self._stderr: deque[str] = deque(maxlen=400)
        self.stdout_lines: list[str] = []  # every non-progress stdout line (e.g. `inspect --json` output)

    @property
    def running(self) -> bool:
        return self.state in (RunState.RUNNING, RunState.CANCELLING)

    def start(
        self, command: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        raise NotImplementedError

    def cancel(self) -> None:
        raise NotImplementedError

    def poll(self) -> None:
        """Deliver pending output and the end of the run, if any (no-op where Qt delivers by signals)."""

    def wait(self, timeout_s: float | None = None, interval_s: float = 0.05) -> RunOutcome | None:
        """Block until the run ends (scripts and tests; the GUI never calls this)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.running or self.outcome is None:
            if self.state is RunState.IDLE:
                return None
            self.poll()
            if not self.running:
                break
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(interval_s)
        return self.outcome

    # --- line handling shared by both transports -----------------------------------------------
    def _begin(self) -> None:
        if self.running:
            raise RuntimeError("The engine is already running; stop it before starting another run.")
        self.state = RunState.RUNNING
        self.outcome = None
        self.last_progress = None
        self._stderr.clear()
        self.stdout_lines = []

    def _stdout_line(self, line: str) -> None:
        event = parse_progress_line(line)
        if event is not None:
            self.last_progress = event
            if self.on_progress:
                self.on_progress(event)
            if self.on_log and event.message:
                self.on_log(f"[{event.stage}] {event.message}")
        else:
            self.stdout_lines.append(line)
            if line.strip() and self.on_log:
                self.on_log(line)

    def _stderr_line(self, line: str) -> None:
        self._stderr.append(line)
        if line.strip() and self.on_log:
            self.on_log(line)

    def _end(self, exit_code: int | None) -> None:
        cancelled = self.state is RunState.CANCELLING
        self.outcome = describe_outcome(exit_code, "\n".join(self._stderr), cancelled=cancelled)
        self.state = self.outcome.state
        if self.on_finished:
            self.on_finished(self.outcome)


class PopenRunner(EngineRunner):
    """subprocess.Popen transport: two reader threads feed a queue that `poll()` drains."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._process: subprocess.Popen[str] | None = None
        self._queue: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._open_streams = 0
        self._cancel_time: float | None = None

    def start(
        self, command: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self._begin()
        self._queue = queue.Queue()
        try:
            self._process = subprocess.Popen(
                list(command),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
                env=dict(env) if env is not None else None,
                cwd=str(cwd) if cwd else None,
                # Own process group, so that a cancel reaches the engine's workers too.
                start_new_session=(os.name == "posix"),
            )
        except OSError as err:
            self._stderr.append(f"could not start {command[0]}: {err}")
            self._end(None)
            return
        self._open_streams = 2
        for name, stream in (("out", self._process.stdout), ("err", self._process.stderr)):
            threading.Thread(target=self._read, args=(name, stream), daemon=True).start()

    def _read(self, name: str, stream) -> None:
        for line in stream:
            self._queue.put((name, line.rstrip("\r\n")))
        self._queue.put((name, None))

    def poll(self) -> None:
        if self._process is None or not self.running:
            return
        while True:
            try:
                name, line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._open_streams -= 1
            elif name == "out":
                self._stdout_line(line)
            else:
                self._stderr_line(line)
        if self._cancel_time is not None and time.monotonic() - self._cancel_time > CANCEL_GRACE_S:
            self._signal(signal.SIGKILL if os.name == "posix" else None)
            self._cancel_time = None
        if self._open_streams == 0 and self._process.poll() is not None:
            self._end(self._process.returncode)

    def cancel(self) -> None:
        if self._process is None or not self.running:
            return
        self.state = RunState.CANCELLING
        self._cancel_time = time.monotonic()
        # SIGINT first: the engine turns it into KeyboardInterrupt and removes its staging folder.
        self._signal(signal.SIGINT if os.name == "posix" else None)

    def _signal(self, sig: int | None) -> None:
        assert self._process is not None
        if self._process.poll() is not None:
            return
        try:
            if sig is None:
                self._process.kill()
            else:
                os.killpg(self._process.pid, sig)
        except ProcessLookupError:
            pass  # it ended between the check and the signal
