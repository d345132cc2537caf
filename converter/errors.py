"""The converter's errors (and the bundle/verify ones every package raises), all WebllamaErrors
(webllama/errors.py: one line, an exit code per class)."""

from __future__ import annotations

from webllama.errors import WebllamaError  # noqa: F401  (re-exported: the base of every class below)


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


class UnusedTensor(ConvertError):
    """A source tensor no graph tensor consumes and no table declares unused: converting would drop it."""


class ShapeMismatch(ConvertError):
    pass


class TokenizerError(ConvertError):
    pass


class UnsupportedVariant(ConvertError):
    pass


class OutputExists(ConvertError):
    pass


class OutputNotWritable(ConvertError):
    """The output folder is on a read-only file system or in a folder the user cannot write."""


class NonFiniteWeights(BadFormat):
    """A source tensor holds NaN or Inf: the model would convert, verify and then emit garbage."""


class DiskFull(ConvertError):
    exit_code = 28  # ENOSPC


class VerifyFailed(WebllamaError):
    exit_code = 3


class BundleError(WebllamaError):
    """A bundle on disk is incomplete, corrupt or of an unknown schema."""

    exit_code = 4


class ContextTooLong(WebllamaError):
    exit_code = 5
