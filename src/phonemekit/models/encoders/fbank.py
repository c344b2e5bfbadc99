"""Log-mel filterbank: 80 bins, 25 ms window, 10 ms hop, optionally
mean-normalised per clip (`fbank+cmn`), optional deltas (`+deltas`). Needs
no weights; the offline baseline.

Per-clip mean normalisation removes the channel, and with it the spectral
envelope that pooled features carry: pooled heads read plain `fbank`, frame
heads `fbank+cmn`.

The STFT is a strided convolution with a fixed Fourier basis, so the same
code runs in torch and exports to ONNX unchanged. Pairs of 10 ms frames are
stacked into one 20 ms frame (50 frames/s, like the wav2vec2 family), which
halves the work of every head."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from phonemekit.config import EncoderConfig
from phonemekit.errors import ConfigError
from phonemekit.models.encoders.base import Encoder, EncoderOutput, register_encoder

N_FFT, WIN, HOP, N_MELS, STACK = 512, 400, 160, 80, 2


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sr: int = 16_000, fmin: float = 20.0, fmax: float = 7600.0) -> np.ndarray:
    """HTK-style triangular filters, shape (n_fft // 2 + 1, n_mels)."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10 ** (m / 2595.0) - 1.0)  # noqa: E731
    points = hz(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    fb = np.zeros((len(freqs), n_mels), dtype=np.float32)
    for i in range(n_mels):
        lo, mid, hi = points[i : i + 3]
        fb[:, i] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
    return fb


class FbankEncoder(Encoder):
    family = "fbank"
    frame_rate = 100.0 / STACK
    weights = "none"
    front_end = "log-mel/2"  # 2: per-clip mean removal became the `+cmn` option

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__(cfg)
        options = cfg.source.split("+")
        if options[0] != "fbank" or not set(options[1:]) <= {"deltas", "cmn"}:
            raise ConfigError(f"invalid value for 'encoder.source': {cfg.source!r} (use 'fbank' with optional '+cmn', '+deltas')")
        self.deltas = "deltas" in options
        self.cmn = "cmn" in options
        self.dim = N_MELS * (3 if self.deltas else 1) * STACK
        n = np.arange(WIN)
        window = 0.5 - 0.5 * np.cos(2 * np.pi * n / WIN)
        k = np.arange(N_FFT // 2 + 1)[:, None]
        basis = np.concatenate([np.cos(2 * np.pi * k * n / N_FFT), -np.sin(2 * np.pi * k * n / N_FFT)]) * window
        self.register_buffer("basis", torch.tensor(basis, dtype=torch.float32)[:, None, :], persistent=False)
        self.register_buffer("melfb", torch.tensor(mel_filterbank()), persistent=False)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        frames = torch.div(torch.clamp(lengths - WIN, min=0), HOP, rounding_mode="floor") + 1
        return torch.clamp(torch.div(frames, STACK, rounding_mode="floor"), min=1)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        if wave.shape[1] < WIN:
            wave = F.pad(wave, (0, WIN - wave.shape[1]))
        spec = F.conv1d(wave[:, None, :], self.basis, stride=HOP)  # (B, 2K, T)
        re, im = spec.chunk(2, dim=1)
        power = (re * re + im * im).transpose(1, 2)  # (B, T, K)
        feats = torch.log(power @ self.melfb + 1e-6)  # (B, T, 80)
        out_len = self.output_lengths(lengths)
        t = (feats.shape[1] // STACK) * STACK
        feats = feats[:, :t]
        frame_mask = (torch.arange(t, device=wave.device)[None, :] < (out_len * STACK)[:, None]).unsqueeze(-1).to(feats.dtype)
        if self.cmn:
            feats = feats - (feats * frame_mask).sum(1, keepdim=True) / (out_len * STACK).clamp(min=1)[:, None, None].to(feats.dtype)
        feats = feats * frame_mask
        if self.deltas:
            d1 = _delta(feats)
            feats = torch.cat([feats, d1, _delta(d1)], dim=-1)
        b, t, d = feats.shape
        feats = feats.reshape(b, t // STACK, d * STACK)
        return EncoderOutput((feats,), out_len)


def _delta(x: torch.Tensor) -> torch.Tensor:
    padded = F.pad(x.transpose(1, 2), (1, 1), mode="replicate").transpose(1, 2)
    return (padded[:, 2:] - padded[:, :-2]) / 2


@register_encoder("fbank", "log-mel filterbank, 80 bins, 25/10 ms, stacked to 50 frames/s; no weights")
def _build(cfg: EncoderConfig) -> Encoder:
    return FbankEncoder(cfg)
