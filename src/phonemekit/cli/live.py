"""Live commands: make-replay, live."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from phonemekit.cli.base import command
from phonemekit.console import console

log = logging.getLogger("phonemekit")


@command("make-replay")
def make_replay(
    manifest: Annotated[Path, typer.Option(help="Manifest to draw labelled clips from.")],
    out: Annotated[Path, typer.Option(help="Output .wav; the truth goes to OUT.labels.json.")],
    clips: Annotated[int, typer.Option(min=1)] = 40,
    gap: Annotated[float, typer.Option(min=0.1, help="Seconds of silence between clips.")] = 0.6,
    seed: Annotated[int, typer.Option()] = 0,
    speakers: Annotated[str | None, typer.Option(help="Comma-separated speakers to draw from (e.g. held-out ones).")] = None,
) -> None:
    """Build a replay file of labelled clips separated by silence (the standard live test)."""
    from phonemekit.data.audio import write_audio
    from phonemekit.data.manifest import load_manifest
    from phonemekit.fileio import write_json
    from phonemekit.live.replay import build_replay

    m = load_manifest(manifest)
    rows = m.rows_of(speakers.split(",")) if speakers else None
    wave, truth = build_replay(m, clips=clips, gap_s=gap, seed=seed, rows=rows)
    write_audio(out, wave)
    write_json(out.with_suffix(".labels.json"), truth)
    typer.echo(f"{len(truth)} clips, {len(wave) / 16000:.1f} s -> {out} (+ {out.with_suffix('.labels.json').name})")


@command()
def live(
    model: Annotated[Path, typer.Option(help="An end-to-end .onnx model, or a bundled model by name.")] = Path("children"),
    file: Annotated[Path | None, typer.Option(help="Replay this file instead of the microphone.")] = None,
    realtime: Annotated[bool, typer.Option(help="Replay the file at real-time speed (default: as fast as possible).")] = False,
    input_device: Annotated[str | None, typer.Option("--input-device", help="Microphone (name or index).")] = None,
    preset: Annotated[str, typer.Option(help="responsive | balanced | stable")] = "balanced",
    config: Annotated[Path | None, typer.Option(help="JSON with live settings on top of the preset.")] = None,
    vad: Annotated[str | None, typer.Option(help="hybrid (default: silero-vad or a noise-floor gate) | silero | energy")] = None,
    hysteresis: Annotated[int | None, typer.Option(min=1)] = None,
    min_confidence: Annotated[float | None, typer.Option(min=0, max=0.99)] = None,
    ema: Annotated[float | None, typer.Option(min=0.01, max=1)] = None,
    expect: Annotated[str | None, typer.Option(help="Practice mode: the sound the child should say.")] = None,
    events: Annotated[Path | None, typer.Option(help="Write events as JSON lines here ('-' for stdout).")] = None,
    report: Annotated[
        bool,
        typer.Option(help="With --file and FILE.labels.json: detection, false triggers, accuracy, latency and flicker of every preset (and each --noise)."),
    ] = False,
    noise: Annotated[
        list[str] | None, typer.Option(help="With --report: also run --preset with noise mixed in, KIND:SNR_DB (pink|hum|clicks), repeatable.")
    ] = None,
    watch: Annotated[bool, typer.Option(help="Reload the model when its file changes.")] = False,
    threads: Annotated[int, typer.Option(min=1)] = 1,
    profile: Annotated[Path | None, typer.Option(help="A speaker profile (`phonemekit enrol`): adapt to the enrolled child.")] = None,
) -> None:
    """Classify sounds live from the microphone or a replayed file."""
    import contextlib
    import json as _json

    from rich.live import Live

    from phonemekit.config import AudioConfig
    from phonemekit.data.audio import load_audio
    from phonemekit.deploy.runtime import Classifier
    from phonemekit.evaluation.enrolment import SpeakerProfile
    from phonemekit.fileio import read_json
    from phonemekit.live.bench import live_table, parse_noise
    from phonemekit.live.engine import LiveEngine, load_live_config, run_stream, summary
    from phonemekit.live.replay import replay_metrics
    from phonemekit.live.sources import array_blocks, mic_blocks
    from phonemekit.live.view import LiveView
    from phonemekit.report.sections import table_markdown

    cfg = load_live_config(preset, config, vad=vad, hysteresis=hysteresis, min_confidence=min_confidence, ema=ema)
    clf = Classifier.load(model, threads=threads)
    if profile is not None:
        clf = clf.with_profile(SpeakerProfile.load(profile))
    engine = LiveEngine(clf, cfg, expect=expect)
    # A replayed file is read once: the session and --report's table both use its samples.
    replay = load_audio(file, AudioConfig(max_seconds=3600, max_bytes=2_000_000_000)).samples if file else None
    blocks = array_blocks(replay, realtime=realtime) if file else mic_blocks(int(input_device) if input_device and input_device.isdigit() else input_device)
    view = LiveView(clf.name, expect)
    sink = open(events, "w", encoding="utf-8") if events and str(events) != "-" else None
    show = console.is_terminal and (file is None or realtime)

    def on_event(ev: dict) -> None:
        view.on_event(ev)
        line = _json.dumps(ev)
        if sink:
            sink.write(line + "\n")
        elif events is not None:
            typer.echo(line)

    try:
        with Live(view, console=console, refresh_per_second=15) if show else contextlib.nullcontext():
            evs = run_stream(engine, blocks, on_event=on_event, on_frame=view.on_frame, watch=model if watch else None)
    finally:
        if sink:
            sink.close()
    s = summary(evs)
    typer.echo(f"session: {s['segments']} segments, {s['labelled']} labelled" + (f", {s['recognised']} recognised as {expect}" if expect else ""))
    if report:
        truth_file = file.with_suffix(".labels.json") if file else None
        if not truth_file or not truth_file.exists():
            raise typer.BadParameter("--report needs --file with a FILE.labels.json beside it (see `phonemekit make-replay`)")
        truth = read_json(truth_file)
        typer.echo(_json.dumps(replay_metrics(evs, truth), indent=2))
        try:
            noises = [parse_noise(n) for n in noise or []]
        except ValueError as e:
            raise typer.BadParameter(str(e)) from e
        table = live_table(clf, replay, truth, noises=noises, noise_presets=(preset,))
        typer.echo("\n".join(table_markdown(table, f"{clf.name}: every preset")))


@command()
def assess(
    audio: Annotated[Path, typer.Argument(help="A recording of the child reading (WAV/FLAC/OGG).")],
    word: Annotated[str | None, typer.Option(help="The word the child was asked to read (phonics lexicon, then the CMU dictionary).")] = None,
    phones: Annotated[str | None, typer.Option(help='The expected sounds instead of a word, e.g. "k a_ae t".')] = None,
    text: Annotated[str | None, typer.Option(help='A sentence instead of a word, e.g. "the cat sat".')] = None,
    mode: Annotated[str, typer.Option(help="segment: sounds said apart; blend: the word said whole.")] = "segment",
    model: Annotated[Path, typer.Option(help="An end-to-end .onnx model, or a bundled model by name.")] = Path("children"),
    variants: Annotated[Path | None, typer.Option(help='Sounds accepted in place of others, JSON: {"variants": {"o_aa": ["aw_ao"]}}.')] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the verdicts as JSON.")] = False,
) -> None:
    """A verdict for every sound of a word: correct, substituted (with what was heard) or missing."""
    import json as _json

    from phonemekit.api import assess_word

    res = assess_word(audio, word=word, phones=phones, text=text, mode=mode, model=model, variants=variants)
    expected = res["expected"]
    if json_out:
        typer.echo(_json.dumps(res, indent=1))
        return
    typer.echo(f"{res['word'] or ' '.join(expected)} ({mode}): {res['correct']} of {len(expected)} sounds correct")
    for s in res["sounds"]:
        heard = "" if s["verdict"] == "correct" or s["heard"] is None else f" (heard {s['heard']})"
        heard += f" (accepted variant {s['variant']})" if s.get("variant") else ""
        at = "" if s["start"] is None else f"  {s['start']:.2f}-{s['end']:.2f} s"
        owner = f"  [{s['word']}]" if "word" in s else ""
        typer.echo(f"  {s['expected']:10s} {s['verdict']}{heard}{at}{owner}")
    if res.get("guessed"):
        typer.echo(f"  (sounded out by phonics rules, in no dictionary: {', '.join(res['guessed'])})")
    for s in res["inserted"]:
        typer.echo(f"  {'+':10s} inserted {s['heard']}  {s['start']:.2f}-{s['end']:.2f} s")


@command("bench-assess")
def bench_assess(
    model: Annotated[Path, typer.Option(help="An end-to-end .onnx model, or a bundled model by name.")] = Path("children"),
    words: Annotated[str, typer.Option(help="Comma-separated words, synthesised and padded to 1.5 s.")] = "cat,ship,frog",
    repeats: Annotated[int, typer.Option(min=1, max=1000, help="Timed calls per word and mode (after 2 warm-up calls).")] = 10,
    out: Annotated[Path | None, typer.Option(help="Also write the figures as JSON here.")] = None,
) -> None:
    """How long a reading verdict takes after the child stops speaking, per mode, against the 150 ms target."""
    from phonemekit.assess.bench import bench_assess as run_bench
    from phonemekit.deploy.runtime import Classifier
    from phonemekit.fileio import write_json

    res = run_bench(Classifier.load(model), words=tuple(w.strip() for w in words.split(",") if w.strip()), repeats=repeats)
    if out:
        write_json(out, res)
    typer.echo(f"{res['model']}: verdict time per word, {res['repeats']} calls each of {', '.join(res['words'])} (target {res['target_ms']:.0f} ms)")
    for mode, v in res["modes"].items():
        verdict = "meets" if v["meets_target"] else "misses"
        typer.echo(f"  {mode:8s} {v['audio_s']:.1f} s audio: median {v['median_ms']:.0f} ms, p90 {v['p90_ms']:.0f} ms, max {v['max_ms']:.0f} ms "
                   f"({verdict} the target); sounds correct {v['sounds_correct']}")  # fmt: skip
