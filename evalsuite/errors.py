"""Errors of the evaluation suite: one-line, actionable, all under webllama.converter.errors.WebllamaError."""

from __future__ import annotations

from webllama.errors import WebllamaError


class EvalError(WebllamaError):
    exit_code = 6


class DataMissing(EvalError):
    """A benchmark file or data folder is missing or inconsistent."""


class UnknownTask(EvalError):
    pass


class UnknownBackend(EvalError):
    pass


class BackendError(EvalError):
    """The model behind a backend cannot be loaded or run (missing bundle variant, page error ...)."""


class RunMismatch(EvalError):
    """Two runs (or a run and its resume cache) are not comparable."""
