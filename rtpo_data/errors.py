"""One exception base for everything a user can get wrong.

The CLI turns any :class:`RtpoDataError` into a one-line red message and exit code 1; ``--verbose``
shows the traceback. Messages say what happened, to which input (file, row, column, flag) and what
to do about it.
"""

from __future__ import annotations


class RtpoDataError(Exception):
    """A problem with the user's input, configuration or artifact, explained for people."""


class ConfigError(RtpoDataError):
    """An invalid build, schedule or trainer configuration. Lists every problem at once."""

    def __init__(self, problems: list[str] | str, *, what: str = "configuration") -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            message = f"Invalid {what}: {self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            message = f"Invalid {what} ({len(self.problems)} problems):\n{lines}"
        super().__init__(message)


class SourceError(RtpoDataError):
    """The source dataset cannot be read or does not have what the build needs."""


class ArtifactError(RtpoDataError):
    """A curriculum directory is missing, damaged, or from an unsupported format version."""


class TokenizerMismatchError(RtpoDataError):
    """The trainer's tokenizer or chat template is not the one a curriculum was built with."""
