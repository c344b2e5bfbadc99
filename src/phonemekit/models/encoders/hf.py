"""The wav2vec2 family through transformers: wav2vec2, WavLM, HuBERT.

One class serves every family; a family is a registry entry naming its
config and model classes. Weights come from a hub id or a local folder via
`from_pretrained`. Random initialisation happens only when the source says
so by name (`random:tiny|small|base`); `base` is the published base
architecture with random weights (used for speed benchmarks).
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from phonemekit.config import EncoderConfig
from phonemekit.errors import ConfigError, MissingWeightsError
from phonemekit.models.encoders.base import Encoder, EncoderOutput, register_encoder

log = logging.getLogger(__name__)

# Architecture overrides for random initialisation. All keep the 320-sample
# (20 ms) stride of the conv feature encoder, so frame rates match the
# pretrained models. "layer" feature norm has no cross-time statistics, so
# padding in a batch does not change a clip's features.
_CONV = {"conv_kernel": (10, 3, 3, 3, 3, 2, 2), "conv_stride": (5, 2, 2, 2, 2, 2, 2)}
RANDOM_SIZES: dict[str, dict] = {
    "tiny": dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer",
        **_CONV,
    ),
    "small": dict(
        hidden_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=256,
        conv_dim=(64,) * 7,
        num_conv_pos_embeddings=32,
        num_conv_pos_embedding_groups=8,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        **_CONV,
    ),
    "base": {},
}


@dataclass(frozen=True)
class Family:
    name: str
    config_cls: str
    model_cls: str
    default_source: str


FAMILIES = {
    "wav2vec2": Family("wav2vec2", "Wav2Vec2Config", "Wav2Vec2Model", "facebook/wav2vec2-base"),
    "wavlm": Family("wavlm", "WavLMConfig", "WavLMModel", "microsoft/wavlm-base"),
    "hubert": Family("hubert", "HubertConfig", "HubertModel", "facebook/hubert-base-ls960"),
}


def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def _missing(family: Family, source: str, why: str) -> MissingWeightsError:
    return MissingWeightsError(
        f"cannot load {family.name} weights from '{source}': {why}. "
        f"Download them once on a machine with internet "
        f"(python -c \"from transformers import {family.model_cls} as M; M.from_pretrained('{source}').save_pretrained('models/{family.name}')\") "
        f"and pass the folder as the source (e.g. --{family.name} models/{family.name}), "
        f"or ask for random weights by name with source 'random:small'"
    )


def load_hf_model(family: Family, source: str, revision: str | None = None):
    """Return (model, weights, do_normalize). The one path for every source."""
    import transformers

    config_cls = getattr(transformers, family.config_cls)
    model_cls = getattr(transformers, family.model_cls)
    if source.startswith("random:"):
        size = source.split(":", 1)[1]
        if size not in RANDOM_SIZES:
            raise ConfigError(f"invalid value for 'encoder.source': {source!r} (random sizes: {', '.join(RANDOM_SIZES)})")
        cfg = config_cls(**RANDOM_SIZES[size], layerdrop=0.0)
        with torch.random.fork_rng():
            torch.manual_seed(0)  # the same random encoder every time: cache keys stay meaningful
            model = model_cls(cfg)
        return model, "random", True
    local = Path(source).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise _missing(family, source, "the folder has no config.json")
    kwargs = {"revision": revision} if revision else {}
    try:
        model = model_cls.from_pretrained(str(local) if local.exists() else source, local_files_only=True, **kwargs)
    except OSError as first:
        if local.exists():
            raise _missing(family, source, str(first).splitlines()[0]) from first
        if not hub_reachable():
            raise _missing(family, source, "not in the local cache and the hub is unreachable (offline)") from first
        try:
            model = model_cls.from_pretrained(source, **kwargs)
        except OSError as e:
            raise _missing(family, source, str(e).splitlines()[0]) from e
    do_normalize = True
    try:
        fe = transformers.Wav2Vec2FeatureExtractor.from_pretrained(str(local) if local.exists() else source, local_files_only=True)
        do_normalize = bool(fe.do_normalize)
    except OSError:
        log.debug("no preprocessor config for %s; normalising input waveforms", source)
    return model, "pretrained", do_normalize


class HFEncoder(Encoder):
    def __init__(self, cfg: EncoderConfig, family: Family) -> None:
        super().__init__(cfg)
        self.family = family.name
        self.model, self.weights, self.do_normalize = load_hf_model(family, cfg.source, cfg.revision)
        self.model.eval()
        mc = self.model.config
        # SpecAugment's default spans (10 frames, at least 2 of them) would
        # mask most of a 0.3-0.6 s phoneme clip; training augments waveforms instead.
        mc.apply_spec_augment = False
        # LayerDrop drops entries from hidden_states in training, which would
        # shift which layer a head reads; layers are chosen by index here.
        mc.layerdrop = 0.0
        self.dim = mc.hidden_size
        self.num_layers = mc.num_hidden_layers + 1
        stride = 1
        for s in mc.conv_stride:
            stride *= s
        self.frame_rate = self.sample_rate / stride

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.model._get_feat_extract_output_lengths(lengths).long().clamp(min=1)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> EncoderOutput:
        mask = (torch.arange(wave.shape[1], device=wave.device)[None, :] < lengths[:, None]).to(wave.dtype)
        if self.do_normalize:
            n = lengths.clamp(min=1)[:, None].to(wave.dtype)
            mean = (wave * mask).sum(1, keepdim=True) / n
            var = (((wave - mean) * mask) ** 2).sum(1, keepdim=True) / n
            wave = (wave - mean) / torch.sqrt(var + 1e-7) * mask
        with warnings.catch_warnings():
            # WavLM's attention passes masks of mixed types; harmless, and noisy.
            warnings.filterwarnings("ignore", message=".*mismatched key_padding_mask.*")
            out = self.model(wave, attention_mask=mask.long(), output_hidden_states=True)
        return EncoderOutput(tuple(out.hidden_states), self.output_lengths(lengths))

    def blocks(self) -> list[nn.Module]:
        return list(self.model.encoder.layers)

    def set_trainable(self, top_layers: int) -> None:
        super().set_trainable(top_layers)
        if top_layers > 0:
            layers = self.model.encoder.layers
            for layer in layers[max(0, len(layers) - top_layers) :]:
                for p in layer.parameters():
                    p.requires_grad = True
            if self.model.encoder.layer_norm is not None and top_layers >= len(layers):
                for p in self.model.encoder.layer_norm.parameters():
                    p.requires_grad = True


def _register(family: Family) -> None:
    @register_encoder(family.name, f"{family.model_cls} via transformers (default {family.default_source})", family.default_source)
    def _build(cfg: EncoderConfig) -> Encoder:
        return HFEncoder(cfg, family)


for _family in FAMILIES.values():
    _register(_family)
