"""Encoder registry. Each family is one module that registers itself;
`available_encoders()` feeds the CLI choices and the docs."""

from __future__ import annotations

from phonemekit.models.encoders.base import (
    Encoder,
    EncoderOutput,
    EncoderSpec,
    available_encoders,
    build_encoder,
    default_source,
    frozen_encoder,
    register_encoder,
)

# Importing the modules registers the families.
from phonemekit.models.encoders import fbank, hf, whisper  # noqa: F401  isort:skip

__all__ = ["Encoder", "EncoderOutput", "EncoderSpec", "available_encoders", "build_encoder", "default_source", "frozen_encoder", "register_encoder"]
