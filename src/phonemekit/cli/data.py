"""Data commands: the demo corpus, prepare, encoders, extract, purge."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from phonemekit.cli.base import Address, Cache, Device, Engine, command
from phonemekit.console import console, progress_bar
from phonemekit.models.presets import DEFAULT_ENCODER

log = logging.getLogger("phonemekit")


@command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Option(help="Output folder; clips go to OUT/recordings.")] = Path("runs/demo/corpus"),
    speakers: Annotated[int, typer.Option(min=3, max=18, help="Number of synthetic speakers.")] = 18,
    takes: Annotated[int, typer.Option(min=1, max=12, help="Takes per speaker and sound.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed for prosody jitter and augmentation.")] = 0,
    channel: Annotated[str, typer.Option(help="room: simulated rooms and microphones on top of noise/telephone/speed; plain: those three only.")] = "room",
    voices: Annotated[
        str, typer.Option(help="espeak: eSpeak's variants as rendered; varied: each speaker's own vocal-tract scale, jittered per take.")
    ] = "espeak",
) -> None:
    """Synthesise the built-in demo corpus with eSpeak NG (offline)."""
    from phonemekit.data.demo import build_demo_corpus

    t0 = time.perf_counter()
    with progress_bar() as p:
        summary = build_demo_corpus(out, speakers=speakers, takes=takes, seed=seed, channel=channel, voices=voices, progress=p)
    log.info(
        "demo corpus: %d clips, %d speakers x %d sounds, %.0f s of audio in %.1f s -> %s",
        summary["clips"],
        summary["speakers"],
        summary["labels"],
        summary["audio_seconds"],
        time.perf_counter() - t0,
        summary["root"],
    )


@command()
def prepare(
    root: Annotated[Path, typer.Argument(help="Data root laid out as ROOT/<speaker>/<label>/*.wav|flac|ogg")],
    out: Annotated[Path, typer.Option(help="Where manifest.jsonl, labels.json and rejected.jsonl go.")],
    strict: Annotated[bool, typer.Option(help="Fail on the first bad file instead of skipping it.")] = False,
    labels: Annotated[Path | None, typer.Option(help="JSON list of allowed labels; other label folders are rejected.")] = None,
    speakers: Annotated[Path | None, typer.Option(help="JSON {speaker: group} (e.g. child/adult); default ROOT/speakers.json or beside ROOT.")] = None,
    max_seconds: Annotated[float, typer.Option(help="Reject clips longer than this.")] = 10.0,
    duplicates: Annotated[str, typer.Option(help="The same audio under several paths: keep-first | reject-all.")] = "keep-first",
) -> None:
    """Validate a recordings folder and write its manifest."""
    from phonemekit.config import AudioConfig
    from phonemekit.data.manifest import prepare as run_prepare
    from phonemekit.data.manifest import read_label_list

    allowed = read_label_list(labels) if labels else None
    with progress_bar() as p:
        s = run_prepare(
            root, out, audio_cfg=AudioConfig(max_seconds=max_seconds), strict=strict, labels=allowed, speakers_file=speakers, duplicates=duplicates, progress=p
        )
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
    from phonemekit.models.encoders import available_encoders

    for name, desc in available_encoders().items():
        typer.echo(f"{name:10s} {desc}")


@command()
def extract(
    manifest: Annotated[Path, typer.Option(help="manifest.jsonl (or its folder) from `prepare`.")],
    encoder: Annotated[str, typer.Option(help="Encoder family (see `phonemekit encoders`).")] = DEFAULT_ENCODER,
    source: Annotated[str | None, typer.Option(help="Hub id, local folder, or random:tiny|small|base. Default: the family's hub id.")] = None,
    layer: Annotated[str, typer.Option(help="Hidden layer to cache (negative counts from the top), or 'weighted' for all layers.")] = "-1",
    out: Annotated[Path, typer.Option(help="Cache folder.")] = Path("cache"),
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    device: Device = "auto",
    engine: Engine = "local",
    address: Address = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Ray workers (default: one per CPU, or per GPU).")] = None,
) -> None:
    """Compute frame features for every clip into the content-addressed cache (a folder or an fsspec URL)."""
    from phonemekit.config import EncoderConfig, parse_layer
    from phonemekit.data.manifest import load_manifest
    from phonemekit.models.encoders import build_encoder, default_source
    from phonemekit.scale.engines import make_engine
    from phonemekit.torchutil import resolve_device

    runner = make_engine(engine, address=address, workers=workers)
    m = load_manifest(manifest)
    enc = build_encoder(EncoderConfig(family=encoder, source=source or default_source(encoder), layer=parse_layer(layer)))
    t0 = time.perf_counter()
    with progress_bar() as p:
        r = runner.extract(m, enc, str(out), progress=p, batch_size=batch_size, device=resolve_device(device))
    log.info(
        "%s (%s weights): %d computed, %d from cache, %d failed in %.1f s -> %s",
        encoder,
        enc.weights,
        r.computed,
        r.cached,
        len(r.failed),
        time.perf_counter() - t0,
        r.cache_dir,
    )
    for name, w in r.workers.items():
        log.info("worker %s: %d clips, %.0f s of audio in %.1f s (%.1f clips/s)", name, w["clips"], w["audio_seconds"], w["seconds"], w["clips_per_s"] or 0)


@command()
def purge(
    older_than: Annotated[float, typer.Option(min=0, help="Delete files older than this many days.")],
    what: Annotated[list[str], typer.Option(help="cache, runs and/or audio (repeatable).")] = ["cache", "runs"],  # noqa: B006
    cache: Cache = Path("cache"),
    runs: Annotated[Path, typer.Option(help="Runs folder.")] = Path("runs"),
    audio: Annotated[Path | None, typer.Option(help="Recordings folder (needed for --what audio).")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Really delete; without it this is a dry run.")] = False,
) -> None:
    """Delete caches, runs or recordings older than N days (dry run unless --yes)."""
    from phonemekit.errors import ConfigError
    from phonemekit.privacy import purge as run_purge

    known = {"cache": cache, "runs": runs, "audio": audio}
    bad = [w for w in what if w not in known]
    if bad:
        raise ConfigError(f"invalid value for '--what': {', '.join(bad)} (cache|runs|audio)")
    if "audio" in what and audio is None:
        raise ConfigError("--what audio needs --audio FOLDER")
    report = run_purge(older_than, {w: known[w] for w in what}, dry_run=not yes)
    for w, r in report.items():
        typer.echo(
            f"{w:6s} {r['root']}: {r['files']} files, {r['bytes'] / 1e6:.1f} MB older than {older_than:g} days"
            + (" deleted" if yes else " would be deleted (dry run; add --yes)")
        )


@command("import")
def import_cmd(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT", help="speechocean762, kaldi, textgrid, timit or audiofolder.")],
    src: Annotated[Path, typer.Argument(help="The corpus folder.")],
    out: Annotated[Path, typer.Option(help="Where the prepared dataset goes (manifest.jsonl, utterances.jsonl, ...).")],
) -> None:
    """Import a corpus in its own format as a prepared dataset (align it next if it has no phone times)."""
    from phonemekit.data.importers import import_corpus

    s = import_corpus(fmt, src, out)
    log.info("%s: %d utterances of %d speakers, %d phone clips, %d rejected -> %s", fmt, s["utterances"], s["speakers_total"], s["clips"],
             s["rejected"], out)  # fmt: skip
    if s["rejected"]:
        log.warning("rejected by reason: %s (details in %s)", s["reasons"], out / "rejected.jsonl")


@command()
def align(
    data: Annotated[Path, typer.Argument(help="A dataset from `phonemekit import`.")],
    aligner: Annotated[str, typer.Option(help="pocketsphinx (see the aligner registry).")] = "pocketsphinx",
    workers: Annotated[int, typer.Option(min=1, help="Processes.")] = 2,
    context: Annotated[float, typer.Option(min=0, max=0.5, help="Seconds kept on each side of a phone.")] = 0.05,
    min_ms: Annotated[float, typer.Option(min=0, help="Shorter phones are dropped.")] = 40.0,
) -> None:
    """Align an imported corpus (cached, resumable) and write its phone segments into the manifest."""
    from phonemekit.align import align_dataset

    with progress_bar() as p:
        s = align_dataset(data, aligner, workers=workers, context=context, min_ms=min_ms, progress=p)
    log.info("%d utterances aligned; %d phone segments kept (%s) -> %s", s.get("utterances_aligned", 0), s["kept"], s["kept_why"], data)
