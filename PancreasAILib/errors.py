"""Errors a user can act on, each with the problem, the fix and an exit status.

Every failure the CLI reports goes through `PancreasAIError`, so the message always names what is
wrong and what to do, and scripts can branch on the exit status.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit statuses of the `pancreasai` command (documented in `pancreasai --help`)."""

    OK = 0
    INTERNAL = 1  # a bug: please report it
    USAGE = 2  # bad command-line arguments (argparse's own status)
    BAD_INPUT = 3  # the input images cannot be used as given
    INCONSISTENT_INPUT = 4  # series of different patients/studies, duplicated phases
    ALIGNMENT_FAILED = 5  # registration failed or its quality is unacceptable
    OUTPUT_EXISTS = 6  # the output folder exists and --overwrite was not given
    NO_PANCREAS = 7  # the pipeline ran but found no pancreas
    TOO_LARGE = 8  # the input would exceed the memory guard
    INTERRUPTED = 130


class PancreasAIError(Exception):
    """A failure the user can fix; `problem` says what is wrong, `fix` what to do."""

    exit_code: ExitCode = ExitCode.BAD_INPUT

    def __init__(self, problem: str, fix: str, *, exit_code: ExitCode | None = None) -> None:
        super().__init__(f"{problem} Fix: {fix}")
        self.problem = problem
        self.fix = fix
        if exit_code is not None:
            self.exit_code = exit_code


class InputError(PancreasAIError):
    """An input path or image that cannot be read or used."""

    exit_code = ExitCode.BAD_INPUT


class InconsistentInputError(PancreasAIError):
    """Inputs that do not belong together (patients, studies, duplicated phases)."""

    exit_code = ExitCode.INCONSISTENT_INPUT


class TooLargeError(PancreasAIError):
    """An input beyond the memory guard."""

    exit_code = ExitCode.TOO_LARGE


class AlignmentError(PancreasAIError):
    """Registration that failed or whose quality is below the acceptance threshold."""

    exit_code = ExitCode.ALIGNMENT_FAILED


class OutputExistsError(PancreasAIError):
    """An output folder that already holds results."""

    exit_code = ExitCode.OUTPUT_EXISTS
