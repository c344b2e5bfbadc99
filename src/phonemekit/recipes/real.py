"""The real-children recipe (`make real SPEECHOCEAN762=DIR`): import
speechocean762, align it with pocketsphinx, extract, train on its official
train speakers (validation speakers drawn from them), evaluate on its test
children and adults apart, beside the pooled-feature baselines, and report
into `runs/real/` with per-step time and peak memory. Resumable: a killed
run continues where it stopped (alignment per utterance, features per clip,
steps by their records)."""

from __future__ import annotations

from pathlib import Path

from phonemekit.align import align_dataset
from phonemekit.config import ModelConfig
from phonemekit.data.importers import import_corpus
from phonemekit.data.importers.base import UTTERANCES
from phonemekit.data.manifest import DATASET, MANIFEST, load_manifest
from phonemekit.models.presets import get_preset
from phonemekit.recipes.pipeline import Pipeline, Step
from phonemekit.report.report import REPORT_JSON, REPORT_MD, Report
from phonemekit.training.experiment import train_all

# Pooled heads on Whisper tiny.en and on log-mel: each phone clip encoded alone, as a game sends it.
REAL_MODELS = ("whisper-mlp", "fbank-mlp")


def real_steps(src: Path, out: Path, *, models: tuple[str, ...] = REAL_MODELS, epochs: int | None = None, workers: int = 2,
               device: str = "cpu", progress=None) -> list[Step]:  # fmt: skip
    data, cache = out / "data", out / "cache"
    cfgs: list[ModelConfig] = [get_preset(m).with_overrides(epochs=epochs) for m in models]

    def align() -> dict:
        stats = align_dataset(data, "pocketsphinx", workers=workers, progress=progress)
        Report.open(out).set("alignment", {"aligner": "pocketsphinx", **stats}).save()
        return {"kept": stats["kept"]}

    def train() -> dict:
        section = train_all(load_manifest(data), cfgs, out, split_kind="corpus", leaky=False, cache_root=cache, device=device,
                            target_group="child", progress=progress, workers=workers,
                            notes=["speechocean762 (CC BY 4.0): Mandarin-L1 speakers reading English; test children and adults are its "
                                   "official test speakers. Each phone clip is the aligned phone +-50 ms, encoded alone."])  # fmt: skip
        return {"best_model": section["best_model"]}

    return [
        Step("import", lambda: _import(src, data), outputs=[data / UTTERANCES, data / DATASET], config={"src": str(src.resolve())}),
        Step("align", align, inputs=[data / UTTERANCES], outputs=[data / MANIFEST], config={"aligner": "pocketsphinx"}),
        Step(
            "train", train, inputs=[data / MANIFEST], outputs=[out / REPORT_JSON, out / REPORT_MD], config={"models": [c.to_dict() for c in cfgs]}
        ),  # fmt: skip
    ]


def _import(src: Path, data: Path) -> dict:
    s = import_corpus("speechocean762", src, data)
    return {"utterances": s["utterances"], "rejected": s["rejected"]}


def run_real(src: str | Path, out: str | Path, *, force: set[str] | None = None, **kw) -> list[dict]:
    src, out = Path(src), Path(out)
    pipeline, steps = Pipeline(out, force=force), real_steps(src, out, **kw)
    records = pipeline.run(steps)
    ran = {r["step"] for r in records}
    times = [{k: r[k] for k in ("step", "seconds", "peak_rss_mb", "finished")} | {"this_run": r["step"] in ran} for r in pipeline.step_times(steps)]
    Report.open(out).set("pipeline", {"steps": times, "total_seconds": round(sum(t["seconds"] for t in times), 1)}).save()
    return records
