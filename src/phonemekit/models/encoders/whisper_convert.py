"""Whisper encoder weights in other libraries' layouts (transformers,
CTranslate2) renamed to the layout `whisper.AudioEncoder` loads (openai's)."""

from __future__ import annotations

import re

import numpy as np
import torch

_HF_LAYER_NAMES = (
    ("self_attn_layer_norm.", "attn_ln."),
    ("self_attn.q_proj.", "attn.query."),
    ("self_attn.k_proj.", "attn.key."),
    ("self_attn.v_proj.", "attn.value."),
    ("self_attn.out_proj.", "attn.out."),
    ("final_layer_norm.", "mlp_ln."),
    ("fc1.", "mlp.0."),
    ("fc2.", "mlp.2."),
)


def from_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' WhisperEncoder names -> this module's (openai's) names."""
    out = {}
    for k, v in state.items():
        if k == "embed_positions.weight":
            k = "positional_embedding"
        elif k.startswith("layer_norm."):
            k = "ln_post." + k[len("layer_norm.") :]
        elif k.startswith("layers."):
            _, i, rest = k.split(".", 2)
            for a, b in _HF_LAYER_NAMES:
                if rest.startswith(a):
                    rest = b + rest[len(a) :]
                    break
            k = f"blocks.{i}.{rest}"
        out[k] = v
    return out


def from_ct2(variables: dict[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], int]:
    """CTranslate2 WhisperSpec encoder variables -> this module's names.
    The attention's q, k, v are one fused matrix there; k has no bias."""

    def t(name: str) -> torch.Tensor:
        if name not in variables:
            raise KeyError(name)
        return torch.from_numpy(np.array(variables[name], dtype=np.float32))  # a copy: the reader hands out read-only views

    def ln(src: str, dst: str) -> dict:
        return {f"{dst}.weight": t(f"{src}/gamma"), f"{dst}.bias": t(f"{src}/beta")}

    def lin(src: str, dst: str) -> dict:
        return {f"{dst}.weight": t(f"{src}/weight"), f"{dst}.bias": t(f"{src}/bias")}

    e = "encoder"
    state = {
        **lin(f"{e}/conv1", "conv1"),
        **lin(f"{e}/conv2", "conv2"),
        **ln(f"{e}/layer_norm", "ln_post"),
        "positional_embedding": t(f"{e}/position_encodings/encodings"),
    }
    n_layer = len({m.group(1) for k in variables if (m := re.match(rf"{e}/layer_(\d+)/", k))})
    for i in range(n_layer):
        p, b = f"{e}/layer_{i}", f"blocks.{i}"
        qkv_w, qkv_b = t(f"{p}/self_attention/linear_0/weight"), t(f"{p}/self_attention/linear_0/bias")
        (qw, kw, vw), (qb, _, vb) = qkv_w.chunk(3), qkv_b.chunk(3)
        state.update(
            {f"{b}.attn.query.weight": qw, f"{b}.attn.query.bias": qb, f"{b}.attn.key.weight": kw, f"{b}.attn.value.weight": vw, f"{b}.attn.value.bias": vb}
        )
        state.update(lin(f"{p}/self_attention/linear_1", f"{b}.attn.out"))
        state.update(ln(f"{p}/self_attention/layer_norm", f"{b}.attn_ln"))
        state.update(ln(f"{p}/ffn/layer_norm", f"{b}.mlp_ln"))
        state.update(lin(f"{p}/ffn/linear_0", f"{b}.mlp.0"))
        state.update(lin(f"{p}/ffn/linear_1", f"{b}.mlp.2"))
    n_head = int(np.asarray(variables[f"{e}/num_heads"]).reshape(-1)[0])
    return state, n_head
