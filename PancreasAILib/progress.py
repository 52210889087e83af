"""Progress reporting shared by the CLI (tqdm bars) and the Slicer module (structured lines).

The engine reports through a `ProgressCallback(stage, fraction, message)`; the CLI turns it into
bars for people or, with `--progress json`, into one JSON object per line on stdout that the
Slicer module's process runner parses.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import TextIO

ProgressCallback = Callable[[str, float, str], None]

PROGRESS_PREFIX = "PANCREASAI_PROGRESS "


def null_progress(stage: str, fraction: float, message: str = "") -> None:
    """Progress sink that ignores everything (library use without output)."""


class JsonLinesProgress:
    """Writes `PANCREASAI_PROGRESS {"stage":..,"fraction":..,"message":..}` lines for a parent process."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        record = {
            "stage": stage,
            "fraction": round(float(fraction), 4),
            "message": message,
            "time": time.time(),
        }
        self.stream.write(PROGRESS_PREFIX + json.dumps(record) + "\n")
        self.stream.flush()


class TqdmProgress:
    """One tqdm bar per stage, on stderr, so stdout stays clean for results."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self._bar = None
        self._stage: str | None = None

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        if stage != self._stage:
            self.close()
            self._stage = stage
            self._bar = self._tqdm(
                total=100,
                desc=stage,
                unit="%",
                leave=True,
                file=sys.stderr,
                bar_format="{desc:<14} {percentage:3.0f}%|{bar:30}| {postfix}",
            )
        assert self._bar is not None
        self._bar.n = round(100 * min(max(fraction, 0.0), 1.0))
        self._bar.set_postfix_str(message[:60], refresh=True)
        if fraction >= 1.0:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._stage = None
