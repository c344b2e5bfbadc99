"""Head registry: each head kind is one module that registers itself
(see `base.py`); `available_heads()` lists them."""

from __future__ import annotations

from phonemekit.models.heads.base import Head, available_heads, build_head, check_head_options, head_options, register_head

# Importing the modules registers the heads.
from phonemekit.models.heads import conv, ctc, mlp  # noqa: F401  isort:skip

__all__ = ["Head", "available_heads", "build_head", "check_head_options", "head_options", "register_head"]
