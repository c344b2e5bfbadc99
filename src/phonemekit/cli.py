"""The `phonemekit` console script: one entry point, one subcommand per step.

Every subcommand has `--help`. Errors from bad input, missing weights or bad
config print one line and exit non-zero.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .console import console, progress_bar, setup_logging
from .errors import PhonemekitError

log = logging.getLogger("phonemekit")

app = typer.Typer(
    help="Recognise single speech sounds spoken by young children: prepare data, train, evaluate, export, classify live.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    setup_logging(verbose)


def command(*args, **kwargs):
    """Register a subcommand whose typed errors become one clear line."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            try:
                return fn(*a, **kw)
            except PhonemekitError as e:
                console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
                raise typer.Exit(2) from None
            except KeyboardInterrupt:
                console.print("[yellow]interrupted[/]")
                raise typer.Exit(130) from None

        return app.command(*args, **kwargs)(wrapper)

    return deco


def _not_yet(name: str):
    def placeholder(ctx: typer.Context) -> None:
        console.print(f"[bold red]error:[/] `phonemekit {name}` is not implemented yet", highlight=False)
        raise typer.Exit(3)

    return placeholder


# ---------------------------------------------------------------- data


@command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Option(help="Output folder; clips go to OUT/recordings.")] = Path("runs/demo/corpus"),
    speakers: Annotated[int, typer.Option(min=3, max=18, help="Number of synthetic speakers.")] = 18,
    takes: Annotated[int, typer.Option(min=1, max=12, help="Takes per speaker and sound.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed for prosody jitter and augmentation.")] = 0,
) -> None:
    """Synthesise the built-in demo corpus with eSpeak NG (offline)."""
    from .data.demo import build_demo_corpus

    t0 = time.perf_counter()
    with progress_bar() as p:
        summary = build_demo_corpus(out, speakers=speakers, takes=takes, seed=seed, progress=p)
    log.info(
        "demo corpus: %d clips, %d speakers x %d sounds, %.0f s of audio in %.1f s -> %s",
        summary["clips"], summary["speakers"], summary["labels"], summary["seconds"], time.perf_counter() - t0, summary["root"],
    )


@command()
def prepare(
    root: Annotated[Path, typer.Argument(help="Data root laid out as ROOT/<speaker>/<label>/*.wav|flac|ogg")],
    out: Annotated[Path, typer.Option(help="Where manifest.jsonl, labels.json and rejected.jsonl go.")],
    strict: Annotated[bool, typer.Option(help="Fail on the first bad file instead of skipping it.")] = False,
    labels: Annotated[Optional[Path], typer.Option(help="JSON list of allowed labels; other label folders are rejected.")] = None,
    speakers: Annotated[Optional[Path], typer.Option(help="JSON {speaker: group} (e.g. child/adult); default ROOT/speakers.json or beside ROOT.")] = None,
    max_seconds: Annotated[float, typer.Option(help="Reject clips longer than this.")] = 10.0,
) -> None:
    """Validate a recordings folder and write its manifest."""
    from .config import AudioConfig
    from .data.manifest import prepare as run_prepare
    from .fileio import read_json

    allowed = read_json(labels) if labels else None
    with progress_bar() as p:
        s = run_prepare(root, out, audio_cfg=AudioConfig(max_seconds=max_seconds), strict=strict, labels=allowed, speakers_file=speakers, progress=p)
    _print_counts(s)
    log.info("%d clips kept, %d rejected%s -> %s", s["clips"], s["rejected"], "" if s["changed"] else " (unchanged, nothing rewritten)", out)
    if s["rejected"]:
        log.warning("rejected by reason: %s (details in %s)", s["reasons"], out / "rejected.jsonl")
    if s["few_clips"]:
        log.warning("classes with fewer than 5 clips: %s", ", ".join(s["few_clips"]))
    for label, missing in s["missing_speakers"].items():
        log.warning("label %s has no clips from: %s", label, ", ".join(missing))


def _print_counts(s: dict) -> None:
    table = Table(title=f"clips per label ({s['clips']} clips, {len(s['speakers'])} speakers, {s['seconds']} s)")
    for col in ("label", "clips", "speakers", "min/speaker", "max/speaker"):
        table.add_column(col, justify="left" if col == "label" else "right")
    for label in s["labels"]:
        per = [s["counts"].get(f"{spk}\t{label}", 0) for spk in s["speakers"]]
        table.add_row(label, str(sum(per)), str(sum(1 for n in per if n)), str(min(per)), str(max(per)))
    console.print(table)


@command()
def encoders() -> None:
    """List the registered encoder families."""
    from .encoders import available_encoders

    for name, desc in available_encoders().items():
        typer.echo(f"{name:10s} {desc}")


@command()
def extract(
    manifest: Annotated[Path, typer.Option(help="manifest.jsonl (or its folder) from `prepare`.")],
    encoder: Annotated[str, typer.Option(help="Encoder family (see `phonemekit encoders`).")] = "wav2vec2",
    source: Annotated[Optional[str], typer.Option(help="Hub id, local folder, or random:tiny|small|base. Default: the family's hub id.")] = None,
    layer: Annotated[int, typer.Option(help="Hidden layer to cache (negative counts from the top).")] = -1,
    out: Annotated[Path, typer.Option(help="Cache folder.")] = Path("cache"),
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    device: Annotated[str, typer.Option(help="auto|cpu|cuda")] = "auto",
) -> None:
    """Compute frame features for every clip into the content-addressed cache."""
    from .cache import extract as run_extract
    from .config import EncoderConfig
    from .data.manifest import load_manifest
    from .encoders import build_encoder
    from .torchutil import resolve_device

    m = load_manifest(manifest)
    enc = build_encoder(EncoderConfig(family=encoder, source=source or _default_source(encoder), layer=layer))
    t0 = time.perf_counter()
    with progress_bar() as p:
        r = run_extract(m, enc, out, progress=p, batch_size=batch_size, device=resolve_device(device))
    log.info(
        "%s (%s weights): %d computed, %d from cache, %d failed in %.1f s -> %s",
        encoder, enc.weights, r.computed, r.cached, len(r.failed), time.perf_counter() - t0, r.cache_dir,
    )


def _default_source(family: str) -> str:
    from .encoders.hf import FAMILIES

    return FAMILIES[family].default_source if family in FAMILIES else family


# Subcommands that later work fills in. They say so plainly.
for _name, _help in {
    "train": "Train one model (encoder + head).",
    "train-all": "Train the three seed models on one split and report.",
    "evaluate": "Evaluate a trained model on a manifest.",
    "confusions": "Most-confused label pairs of a trained model.",
    "export": "Export a trained model to ONNX.",
    "test-batch": "Classify a folder or manifest with a model.",
    "test-onnx": "Parity and accuracy of exported ONNX files.",
    "benchmark": "Measure latency, throughput and memory against the targets.",
    "compare": "Side-by-side report of trained models.",
    "ensemble": "Combine trained models.",
    "live": "Classify from a microphone or a replayed file.",
    "demo": "Run the whole pipeline on the built-in demo corpus.",
    "purge": "Delete caches, runs or audio older than N days.",
}.items():
    if _name not in {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}:
        app.command(_name, help=f"{_help} (not implemented yet)", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
            _not_yet(_name)
        )


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
