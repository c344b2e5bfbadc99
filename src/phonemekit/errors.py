"""Typed errors. The CLI turns each into one clear line and a non-zero exit."""

from __future__ import annotations


class PhonemekitError(Exception):
    """Base class for every error the CLI reports without a traceback."""


class AudioValidationError(PhonemekitError):
    """An audio file was rejected. `reason` is a short machine-readable code."""

    def __init__(self, path: object, reason: str, detail: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {reason}" + (f" ({detail})" if detail else ""))


class MissingWeightsError(PhonemekitError):
    """Pretrained weights were asked for and could not be found."""


class ConfigError(PhonemekitError):
    """A config file or option is invalid; the message names the key."""


class IntegrityError(PhonemekitError):
    """An artifact does not match the hash recorded for it."""


class DataError(PhonemekitError):
    """A dataset, manifest or split cannot be used as asked."""


class OutputError(PhonemekitError):
    """An output could not be written (read-only or full disk, a file in a folder's place, ...)."""


class LockedError(PhonemekitError):
    """Another phonemekit run holds the output folder."""
