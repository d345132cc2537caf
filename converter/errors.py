"""One error hierarchy for the whole toolkit.

Every error a user can cause is a WebllamaError whose message is one line: what failed, where,
and how to fix it. The CLI prints `error: <message>` and exits with the class's exit code; library
code never prints or exits.
"""

from __future__ import annotations


class WebllamaError(Exception):
    """Base class: a failure the user can act on."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        # One line, always: multi-line messages are folded so the CLI prints exactly one line.
        super().__init__(" ".join(str(message).split()))


class ConvertError(WebllamaError):
    exit_code = 2


class UnsupportedArchitecture(ConvertError):
    pass


class UnsupportedSource(ConvertError):
    pass


class MissingFile(ConvertError):
    pass


class BadFormat(ConvertError):
    """A file exists but is corrupt, truncated or not what its name says."""


class MissingTensor(ConvertError):
    pass


class ShapeMismatch(ConvertError):
    pass


class TokenizerError(ConvertError):
    pass


class UnsupportedVariant(ConvertError):
    pass


class OutputExists(ConvertError):
    pass


class DiskFull(ConvertError):
    exit_code = 28  # ENOSPC


class VerifyFailed(WebllamaError):
    exit_code = 3


class BundleError(WebllamaError):
    """A bundle on disk is incomplete, corrupt or of an unknown schema."""

    exit_code = 4


class ContextTooLong(WebllamaError):
    exit_code = 5
