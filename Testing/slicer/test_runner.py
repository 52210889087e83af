"""The engine process runner with small fake children: progress, log, cancel, crash, errors."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time

import pytest
from PancreasAILogicLib.runner import (
    PROGRESS_PREFIX,
    PopenRunner,
    ProgressEvent,
    RunState,
    parse_engine_error,
    parse_progress_line,
)


def child(code: str) -> list[str]:
    return [sys.executable, "-u", "-c", textwrap.dedent(code)]


def progress_line(stage: str, fraction: float, message: str = "") -> str:
    return PROGRESS_PREFIX + json.dumps(
        {"stage": stage, "fraction": fraction, "message": message, "time": 1.0}
    )


def make_runner():
    events: list[ProgressEvent] = []
    logs: list[str] = []
    finished = []
    runner = PopenRunner(on_progress=events.append, on_log=logs.append, on_finished=finished.append)
    return runner, events, logs, finished


def test_prefix_matches_the_engine() -> None:
    from PancreasAILib.progress import PROGRESS_PREFIX as ENGINE_PREFIX

    assert PROGRESS_PREFIX == ENGINE_PREFIX


def test_progress_lines_parse_and_garbage_is_ignored() -> None:
    event = parse_progress_line(progress_line("stage2", 0.5, "tumour"))
    assert event == ProgressEvent("stage2", 0.5, "tumour", 1.0)
    assert event.title == "Segmenting the tumour"
    assert 3 / 7 < event.overall < 4 / 7
    assert parse_progress_line(PROGRESS_PREFIX + "{not json") is None
    assert parse_progress_line("plain output") is None


def test_successful_run_reports_progress_and_log() -> None:
    runner, events, logs, finished = make_runner()
    lines = [progress_line(s, 1.0, f"{s} done") for s in ("load", "align", "stage1")]
    runner.start(
        child(f"""
        import sys
        for line in {lines!r}:
            print(line)
        print("hello from the engine")
        print("a warning", file=sys.stderr)
    """)
    )
    outcome = runner.wait(timeout_s=30)
    assert outcome is not None and outcome.ok and outcome.state is RunState.SUCCEEDED
    assert [e.stage for e in events] == ["load", "align", "stage1"]
    assert "hello from the engine" in logs and "a warning" in logs
    assert runner.stdout_lines == ["hello from the engine"]
    assert finished == [outcome]
    assert not runner.running


def test_cancel_stops_a_running_child_quickly() -> None:
    runner, events, _logs, finished = make_runner()
    runner.start(
        child(f"""
        import time
        print({progress_line("load", 0.0, "started")!r}, flush=True)
        time.sleep(60)
    """)
    )
    deadline = time.monotonic() + 20
    while not events and time.monotonic() < deadline:
        runner.poll()
        time.sleep(0.02)
    assert events, "the child never reported progress"
    start = time.monotonic()
    runner.cancel()
    outcome = runner.wait(timeout_s=20)
    assert outcome is not None and outcome.state is RunState.CANCELLED
    assert time.monotonic() - start < 10
    assert "unchanged" in outcome.message
    assert len(finished) == 1


def test_child_that_ignores_interrupt_is_killed() -> None:
    runner, events, _logs, _finished = make_runner()
    runner.start(
        child(f"""
        import signal, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print({progress_line("load", 0.0)!r}, flush=True)
        time.sleep(60)
    """)
    )
    while not events:
        runner.poll()
        time.sleep(0.02)
    import PancreasAILogicLib.runner as runner_module

    grace, runner_module.CANCEL_GRACE_S = runner_module.CANCEL_GRACE_S, 0.5
    try:
        runner.cancel()
        outcome = runner.wait(timeout_s=20)
    finally:
        runner_module.CANCEL_GRACE_S = grace
    assert outcome is not None and outcome.state is RunState.CANCELLED


@pytest.mark.skipif(os.name != "posix", reason="signals are POSIX")
def test_crash_of_the_child_gives_a_clear_message() -> None:
    runner, _events, _logs, _finished = make_runner()
    runner.start(
        child(f"""
        import os, signal
        print({progress_line("stage1", 0.3)!r}, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    )
    outcome = runner.wait(timeout_s=30)
    assert outcome is not None and outcome.state is RunState.FAILED
    assert outcome.exit_code == -signal.SIGKILL
    assert "stopped unexpectedly" in outcome.message and "unchanged" in outcome.message


def test_engine_error_message_is_shown_with_its_fix() -> None:
    runner, _events, _logs, _finished = make_runner()
    runner.start(
        child("""
        import sys
        print("pancreasai segment: error: No pancreas was found.\\n  fix: Check the field of view.", file=sys.stderr)
        sys.exit(7)
    """)
    )
    outcome = runner.wait(timeout_s=30)
    assert outcome is not None and outcome.state is RunState.FAILED and outcome.exit_code == 7
    assert outcome.message.startswith("No pancreas was found. What to do: Check the field of view.")


def test_unknown_failure_names_exit_status_and_last_line() -> None:
    runner, _events, _logs, _finished = make_runner()
    runner.start(
        child("""
        import sys
        print("Traceback: something broke", file=sys.stderr)
        sys.exit(1)
    """)
    )
    outcome = runner.wait(timeout_s=30)
    assert outcome is not None and "exit status 1" in outcome.message and "something broke" in outcome.message


def test_missing_executable_fails_cleanly() -> None:
    runner, _events, _logs, finished = make_runner()
    runner.start(["/nonexistent/python-for-pancreasai"])
    assert runner.state is RunState.FAILED and finished
    assert "could not be started" in finished[0].message


def test_a_second_start_while_running_is_refused() -> None:
    runner, _events, _logs, _finished = make_runner()
    runner.start(child("import time; time.sleep(30)"))
    try:
        with pytest.raises(RuntimeError, match="already running"):
            runner.start(child("pass"))
    finally:
        runner.cancel()
        runner.wait(timeout_s=20)


def test_parse_engine_error_reads_the_last_error() -> None:
    text = "noise\npancreasai segment: error: Bad input.\n  fix: Give a CT.\n"
    assert parse_engine_error(text) == ("Bad input.", "Give a CT.")
    assert parse_engine_error("nothing here") is None
