"""The engine runner inside Slicer: QProcess, with output delivered by Qt signals on the GUI thread.

Same interface and state machine as `PopenRunner` (runner.py), which the tests drive; only the
transport differs, so the line handling, messages and cancel semantics are the tested ones.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

from PancreasAILogicLib.runner import CANCEL_GRACE_S, EngineRunner, RunState


class QProcessRunner(EngineRunner):
    """QProcess transport for Slicer: output arrives through Qt signals on the GUI thread."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        import qt  # Slicer's PythonQt; imported here so that this module loads anywhere

        self._qt = qt
        self._process = None
        self._buffers = {"out": "", "err": ""}
        self._kill_timer = qt.QTimer()
        self._kill_timer.setSingleShot(True)
        self._kill_timer.connect("timeout()", self._kill)

    def start(
        self, command: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        qt = self._qt
        self._begin()
        self._buffers = {"out": "", "err": ""}
        process = qt.QProcess()
        if env is not None:
            environment = qt.QProcessEnvironment()
            for key, value in env.items():
                environment.insert(key, value)
            process.setProcessEnvironment(environment)
        if cwd:
            process.setWorkingDirectory(str(cwd))
        process.connect("readyReadStandardOutput()", lambda: self._read("out"))
        process.connect("readyReadStandardError()", lambda: self._read("err"))
        process.connect("finished(int,QProcess::ExitStatus)", self._finished)
        process.connect("errorOccurred(QProcess::ProcessError)", self._error)
        self._process = process
        process.start(command[0], list(command[1:]))

    def _read(self, name: str) -> None:
        raw = self._process.readAllStandardOutput() if name == "out" else self._process.readAllStandardError()
        data = raw.data() if hasattr(raw, "data") else raw  # PythonQt gives QByteArray or bytes
        chunk = bytes(data).decode("utf-8", errors="replace") if not isinstance(data, str) else data
        text = self._buffers[name] + chunk
        *lines, self._buffers[name] = text.split("\n")
        for line in lines:
            (self._stdout_line if name == "out" else self._stderr_line)(line.rstrip("\r"))

    def _flush(self) -> None:
        for name in ("out", "err"):
            self._read(name)
            if self._buffers[name]:
                (self._stdout_line if name == "out" else self._stderr_line)(self._buffers[name])
                self._buffers[name] = ""

    def _finished(self, exit_code: int, exit_status) -> None:
        if not self.running:
            return
        self._kill_timer.stop()
        self._flush()
        crashed = exit_status == self._qt.QProcess.CrashExit
        self._end(None if crashed else int(exit_code))

    def _error(self, error) -> None:
        if error == self._qt.QProcess.FailedToStart and self.running:
            self._stderr_line(f"could not start the engine: {self._process.errorString()}")
            self._end(None)

    def cancel(self) -> None:
        if self._process is None or not self.running:
            return
        self.state = RunState.CANCELLING
        if os.name == "posix":
            with contextlib.suppress(ProcessLookupError):  # it may have ended already
                os.kill(int(self._process.processId()), signal.SIGINT)
        else:
            self._process.terminate()
        self._kill_timer.start(int(CANCEL_GRACE_S * 1000))

    def _kill(self) -> None:
        if self._process is not None and self.running:
            self._process.kill()
