"""Typed errors raised by the engines layer.

The connector catches `EngineError` at start-up (bad configuration, missing models) and per call
(an engine that fails on one utterance), so every failure of this package is one of these.
"""

from __future__ import annotations

MAKE_MODELS_HINT = "run `make models` (python -m engines.models) to install the local models"


class EngineError(Exception):
    """Base class of every error raised by `engines`.

    `provider` names the provider that failed, when a wrapper in front of several (a cloud engine with a local
    fallback) knows which one it was; `engines.fallback.failed_provider` reads it for metrics and logs.
    """

    provider: str | None = None


class EngineConfigError(EngineError):
    """The engine configuration names an unknown provider or carries invalid options."""


class ModelMissingError(EngineError):
    """A model is absent from the manifest or from disk; the message says to run `make models`."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"{detail}: {MAKE_MODELS_HINT}")


class ModelIntegrityError(EngineError):
    """A model file on disk does not match the size or sha256 recorded for it."""


class EngineInputError(EngineError, ValueError):
    """Audio or text handed to an engine has the wrong shape, type or size."""


class LlmOutputError(EngineError):
    """The LLM produced output that cannot be used (e.g. truncated or invalid JSON)."""
