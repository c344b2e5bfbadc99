"""One training loop for every head.

Frozen encoders train from the feature cache; `train.finetune_layers != 0`
trains the encoder (or its top N layers) end to end on waveforms. The loop
is seeded per epoch, saves its full state atomically after every epoch, and
`resume` continues an interrupted run to the same final weights.
"""

from __future__ import annotations

import io
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from phonemekit.config import ModelConfig, from_dict
from phonemekit.data.cache import FeatureCache
from phonemekit.data.features import Batch, ClipData, load_clips
from phonemekit.data.manifest import Manifest
from phonemekit.errors import ConfigError
from phonemekit.fileio import write_bytes
from phonemekit.models.encoders import build_encoder, frozen_encoder
from phonemekit.models.heads import check_head_options
from phonemekit.models.model import PhonemeModel
from phonemekit.privacy import audit
from phonemekit.runs import Run
from phonemekit.scale.engines import LocalEngine
from phonemekit.training.specaugment import spec_augment

log = logging.getLogger(__name__)

STATE = "train_state.pt"
# SpecAugment sized for a clip (a phone is 5-25 encoder frames): one short
# span of frames and two of channels.
CLIP_MASKS = {"time_masks": 1, "max_frames": 3, "feature_masks": 2, "max_features": 40}


@dataclass
class TrainResult:
    model: PhonemeModel
    run_dir: Path
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0


def _is_oom(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


class Trainer:
    def __init__(
        self,
        cfg: ModelConfig,
        manifest: Manifest,
        train_rows: list[dict],
        val_rows: list[dict],
        run_dir: str | Path,
        *,
        cache_root: str | Path = "cache",
        device: str = "cpu",
        progress=None,
        engine=None,
    ) -> None:
        self.cfg, self.manifest, self.run_dir = cfg, manifest, Path(run_dir)
        self.run = Run(self.run_dir)
        self.device, self.progress = device, progress
        self.spec_rng: np.random.Generator | None = None  # set per epoch with train.spec_augment
        check_head_options(cfg.head)  # before any feature is extracted
        tc = cfg.train
        if tc.num_threads:
            torch.set_num_threads(tc.num_threads)
        torch.manual_seed(tc.seed)
        self.end_to_end = tc.finetune_layers != 0
        encoder = build_encoder(cfg.encoder) if self.end_to_end else frozen_encoder(cfg.encoder)
        if self.end_to_end:
            if encoder.weights == "none":
                raise ConfigError("invalid value for 'train.finetune_layers': the fbank encoder has no weights to fine-tune")
            encoder.set_trainable(tc.finetune_layers)
            spec = encoder.spec
            self.model = PhonemeModel(cfg, manifest.labels, spec, encoder)
            self.train_data = load_clips(manifest, train_rows, audio_cfg=cfg.audio)
            self.val_data = load_clips(manifest, val_rows, audio_cfg=cfg.audio)
        else:
            if tc.augment:
                log.warning("train.augment needs end-to-end training; with cached features it is ignored")
            spec = encoder.spec
            sub = Manifest(manifest.root, train_rows + val_rows, manifest.labels, manifest.path)
            res = (engine or LocalEngine()).extract(sub, encoder, cache_root, audio_cfg=cfg.audio, progress=progress, device=device)
            cache = FeatureCache(cache_root, spec)
            failed = {f["sha256"] for f in res.failed}
            self.model = PhonemeModel(cfg, manifest.labels, spec, None)
            self.train_data = load_clips(manifest, [r for r in train_rows if r["sha256"] not in failed], cache=cache)
            self.val_data = load_clips(manifest, [r for r in val_rows if r["sha256"] not in failed], cache=cache)
            if hasattr(self.model.head, "fit_statistics"):  # frozen features: input statistics of the training clips
                items = self.train_data.items
                if self.model.layer_mix is not None:  # statistics of the initial (uniform) mix
                    with torch.no_grad():
                        items = [self.model.layer_mix(torch.from_numpy(f)[None])[0].numpy() for f in items]
                self.model.head.fit_statistics(items)
        if tc.warm_start:
            warm_start(self.model, Run(tc.warm_start))
        self.model.to(device)
        head_params = [p for n, p in self.model.named_parameters() if not n.startswith("encoder.")]
        groups = [{"params": head_params, "lr": tc.lr}, *encoder_groups(self.model, tc.encoder_lr or tc.lr, tc.layer_decay)]
        self.base_lrs = [g["lr"] for g in groups]
        self.opt = torch.optim.AdamW(groups, weight_decay=tc.weight_decay)
        if tc.schedule == "cosine":
            total = tc.epochs * math.ceil(len(self.train_data) / tc.batch_size)
            warm = max(1, int(tc.warmup * total))
            self.sched = torch.optim.lr_scheduler.LambdaLR(
                self.opt, lambda step: min(1.0, (step + 1) / warm) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
            )
        elif tc.schedule == "plateau":
            self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(self.opt, mode="max", factor=0.5, patience=max(1, tc.patience // 3))
        else:
            self.sched = None
        self.micro_batch = max(1, tc.batch_size // tc.grad_accum)
        self.epoch, self.best, self.best_epoch, self.bad_epochs, self.history = 0, (-1.0, math.inf), 0, 0, []

    # -- forward passes ---------------------------------------------------------------

    def _outputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        x, lengths = batch.x.to(self.device), batch.lengths.to(self.device)
        if self.end_to_end:
            x, lengths = self.model.encode(x, lengths)
        return self.model.head_outputs(x, lengths), self.model.out_lengths(lengths)

    def _loss(self, outputs: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = y.to(self.device)
        if self.model.output_kind == "logits":
            return F.cross_entropy(outputs, y)
        return F.ctc_loss(outputs.transpose(0, 1), y[:, None], lengths, torch.ones_like(lengths), blank=self.model.blank, zero_infinity=True)

    @torch.no_grad()
    def evaluate(self, data: ClipData, batch_size: int = 64) -> tuple[float, float]:
        """Validation loss and top-1."""
        self.model.eval()
        loss_sum, hits = 0.0, 0
        for batch in data.batches(batch_size):
            out, lengths = self._outputs(batch)
            loss_sum += float(self._loss(out, lengths, batch.y)) * len(batch.y)
            hits += int((self.model.scores(out, lengths).argmax(1).cpu() == batch.y).sum())
        return loss_sum / len(data), hits / len(data)

    # -- one epoch -------------------------------------------------------------------

    def _step(self, idx: list[int], rng: np.random.Generator | None) -> float:
        """One optimiser step over `idx`, split into micro-batches. When a
        micro-batch does not fit in memory it is halved and the step redone
        with more accumulation, keeping the effective batch."""
        while True:
            try:
                self.opt.zero_grad(set_to_none=True)
                total = 0.0
                for start in range(0, len(idx), self.micro_batch):
                    part = idx[start : start + self.micro_batch]
                    batch = self.train_data.batch(part, rng)
                    if self.spec_rng is not None:
                        spec_augment(batch.x, batch.lengths, self.spec_rng, **CLIP_MASKS)  # in place: the batch is fresh
                    out, lengths = self._outputs(batch)
                    loss = self._loss(out, lengths, batch.y) * (len(part) / len(idx))
                    loss.backward()
                    total += loss.item()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
                self.opt.step()
                if isinstance(self.sched, torch.optim.lr_scheduler.LambdaLR):
                    self.sched.step()  # per optimiser step; plateau steps per epoch
                return total
            except RuntimeError as e:
                if not _is_oom(e) or self.micro_batch == 1:
                    raise
                self.micro_batch //= 2
                accum = math.ceil(len(idx) / self.micro_batch)
                # The effective batch is kept, so the learning rate stays as set;
                # if it could not be kept exactly, scale the rate with it.
                scale = min(1.0, self.micro_batch * accum / self.cfg.train.batch_size)
                if isinstance(self.sched, torch.optim.lr_scheduler.LambdaLR):
                    self.sched.base_lrs = [lr * scale for lr in self.base_lrs]
                else:
                    for g, lr in zip(self.opt.param_groups, self.base_lrs):
                        g["lr"] = lr * scale
                log.warning(
                    "batch did not fit in memory: micro-batch %d x %d accumulation steps (effective batch kept at %d)",
                    self.micro_batch,
                    accum,
                    self.cfg.train.batch_size,
                )
                if self.device.startswith("cuda"):
                    torch.cuda.empty_cache()

    def run_epoch(self) -> dict:
        tc = self.cfg.train
        seed = tc.seed * 100_003 + self.epoch
        torch.manual_seed(seed)  # dropout, SpecAugment: the same for a resumed epoch
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self.train_data), generator=gen).tolist()
        rng = np.random.default_rng(seed) if (tc.augment and self.end_to_end) else None
        self.spec_rng = np.random.default_rng([seed, 1]) if (tc.spec_augment and not self.end_to_end) else None
        self.model.train()
        if self.end_to_end and tc.finetune_layers > 0:
            self.model.encoder.eval()  # frozen lower layers keep eval behaviour
        t0, losses = time.perf_counter(), []
        steps = range(0, len(order), tc.batch_size)
        task = self.progress.add_task(f"{self.cfg.name} epoch {self.epoch + 1}/{tc.epochs}", total=len(steps)) if self.progress else None
        for start in steps:
            losses.append(self._step(order[start : start + tc.batch_size], rng))
            if self.progress:
                self.progress.advance(task)
        if self.progress:
            self.progress.remove_task(task)
        val_loss, val_top1 = self.evaluate(self.val_data)
        lr = self.opt.param_groups[0]["lr"]
        if isinstance(self.sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.sched.step(val_top1)
        return {
            "epoch": self.epoch + 1,
            "train_loss": float(np.mean(losses)),
            "val_loss": val_loss,
            "val_top1": val_top1,
            "lr": lr,
            "seconds": round(time.perf_counter() - t0, 2),
        }

    # -- state ------------------------------------------------------------------------

    def _save_state(self) -> None:
        state = {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict() if self.sched is not None else {},
            "epoch": self.epoch,
            "best": list(self.best),
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "micro_batch": self.micro_batch,
            "history": self.history,
            "config": self.cfg.to_dict(),
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        write_bytes(self.run_dir / STATE, buf.getvalue())

    def _load_state(self) -> None:
        state = torch.load(self.run_dir / STATE, map_location=self.device, weights_only=True)
        # Read back through the typed config, so a field added since (with its default) is no difference.
        try:
            saved = from_dict(ModelConfig, state["config"]).to_dict()
        except ConfigError:
            saved = None
        if saved != self.cfg.to_dict():
            raise ConfigError(f"cannot resume {self.run_dir}: it was started with a different config (use a new --out or drop --resume)")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        if self.sched is not None:
            self.sched.load_state_dict(state["sched"])
        self.epoch, self.best, self.best_epoch = state["epoch"], tuple(state["best"]), state["best_epoch"]
        self.bad_epochs, self.micro_batch, self.history = state["bad_epochs"], state["micro_batch"], state["history"]
        log.info("resuming %s after epoch %d", self.run_dir, self.epoch)

    def fit(self, resume: bool = False) -> TrainResult:
        tc = self.cfg.train
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume and (self.run_dir / STATE).exists():
            self._load_state()
        self.run.write_config(self.cfg)
        t0 = time.perf_counter() - sum(h["seconds"] for h in self.history)
        while self.epoch < tc.epochs and self.bad_epochs < tc.patience:
            rec = self.run_epoch()
            self.epoch += 1
            self.history.append(rec)
            score = (rec["val_top1"], rec["val_loss"])
            improved = score[0] > self.best[0] + 1e-6 or (abs(score[0] - self.best[0]) <= 1e-6 and score[1] < self.best[1])
            if improved:
                self.best, self.best_epoch, self.bad_epochs = score, self.epoch, 0
                self.run.save_checkpoint(
                    self.model,
                    metrics={"val_top1": score[0], "val_loss": score[1], "epoch": self.epoch},
                    extra={"data": str(self.manifest.path) if self.manifest.path else None},
                )
            else:
                self.bad_epochs += 1
            self._save_state()
            log.info(
                "%s epoch %d: train loss %.3f, val loss %.3f, val top-1 %.3f (%.1f s)%s",
                self.cfg.name,
                rec["epoch"],
                rec["train_loss"],
                rec["val_loss"],
                rec["val_top1"],
                rec["seconds"],
                " *" if improved else "",
            )
        self.run.write_history(self.history)
        audit("train", model=self.cfg.name, epochs=self.epoch, train_clips=len(self.train_data), checkpoint_sha256=self.run.sha256)
        best = self.run.load(map_location=self.device)
        if self.end_to_end or best.encoder is not None:
            best.to(self.device)
        return TrainResult(best, self.run_dir, self.history, self.best_epoch, time.perf_counter() - t0)


def encoder_groups(model: PhonemeModel, lr: float, decay: float) -> list[dict]:
    """The encoder's trainable parameters as optimiser groups: block k from
    the top at lr * decay**k (layer-wise rate decay: lower layers hold the
    general acoustics and move least), the rest (final norms) at lr."""
    if model.encoder is None:
        return []
    groups, seen = [], set()
    for k, block in enumerate(reversed(model.encoder.blocks())):
        params = [p for p in block.parameters() if p.requires_grad]
        seen |= {id(p) for p in block.parameters()}
        if params:
            groups.append({"params": params, "lr": lr * decay**k})
    rest = [p for p in model.encoder.parameters() if p.requires_grad and id(p) not in seen]
    return groups + ([{"params": rest, "lr": lr}] if rest else [])


def warm_start(model: PhonemeModel, run: Run) -> None:
    """Start `model`'s head (and layer mix) from a run of the same head and
    labels, trained on frozen features."""
    source = run.load()
    if source.labels != model.labels or source.cfg.head != model.cfg.head:
        raise ConfigError(f"train.warm_start: {run.path} has another head or other labels than {model.cfg.name}")
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("encoder.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.startswith("encoder.")]:
        raise ConfigError(f"train.warm_start: {run.path}'s head does not fit {model.cfg.name}'s (another encoder size or layer?)")
    log.info("%s: head warm-started from %s", model.cfg.name, run.path)


def train_model(
    cfg: ModelConfig,
    manifest: Manifest,
    train_rows: list[dict],
    val_rows: list[dict],
    run_dir: str | Path,
    *,
    cache_root: str | Path = "cache",
    device: str = "cpu",
    resume: bool = False,
    progress=None,
    engine=None,
) -> TrainResult:
    """`engine` extracts a frozen encoder's features (default: this machine; see `phonemekit.scale`)."""
    return Trainer(cfg, manifest, train_rows, val_rows, run_dir, cache_root=cache_root, device=device, progress=progress, engine=engine).fit(resume)
