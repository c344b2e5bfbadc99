"""Deployment commands: export, test-batch, test-onnx, benchmarks, compare, ensemble."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from phonemekit.cli.base import Trusted, command
from phonemekit.console import progress_bar

log = logging.getLogger("phonemekit")


def _trusted(path: Path | None) -> set | None:
    from phonemekit.deploy.runtime import load_trusted_hashes

    return load_trusted_hashes(path) if path else None


@command()
def export(
    run: Annotated[Path, typer.Argument(help="Run folder of a trained model.")],
    out: Annotated[Path | None, typer.Option(help="Output folder; default RUN/onnx.")] = None,
    data: Annotated[Path | None, typer.Option(help="Manifest with real clips for the parity check; default: the training manifest.")] = None,
    clips: Annotated[int, typer.Option(min=2, help="Clips in the parity check.")] = 32,
    forms: Annotated[str, typer.Option(help="head,e2e")] = "head,e2e",
    int8: Annotated[bool, typer.Option(help="Also try a dynamic int8 copy (kept only if faster and accurate).")] = True,
    trusted_hashes: Trusted = None,
) -> None:
    """Export a trained model to ONNX (head-only and end-to-end) with a parity check."""
    from phonemekit.deploy.export import export_run, parity_clips

    rec = export_run(run, parity_clips(run, data, clips), out, forms=tuple(f.strip() for f in forms.split(",")), int8=int8, trusted=_trusted(trusted_hashes))
    for form, f in rec["files"].items():
        typer.echo(
            f"{form:5s} {f['path']}  {f['bytes'] / 1e6:.1f} MB  top-1 agreement {f['parity']['top1_agreement']:.3f}  "
            f"max |dp| {f['parity']['max_abs_diff']:.1e}" + (f"  int8: {f['int8']['reason']}" if "int8" in f else "")
        )


@command("test-batch")
def test_batch(
    model: Annotated[Path, typer.Argument(help="An .onnx file, a run folder (torch checkpoint), or a bundled model by name (children).")],
    data: Annotated[Path, typer.Argument(help="Folder of audio (label = parent folder name), a manifest, or one file.")],
    out: Annotated[Path, typer.Option(help="Per-file predictions (.csv or .json).")] = Path("predictions.csv"),
    top_k: Annotated[int, typer.Option(min=1)] = 3,
    profile: Annotated[Path | None, typer.Option(help="A speaker profile (`phonemekit enrol`): classify as adapted to that speaker.")] = None,
    trusted_hashes: Trusted = None,
) -> None:
    """Classify every file with a model; write predictions and accuracy."""
    from phonemekit.deploy.batchtest import list_inputs, load_predictor, run_batch, write_predictions

    labels, predict, kind = load_predictor(model, _trusted(trusted_hashes), profile)
    items = list_inputs(data, labels)
    with progress_bar() as p:
        rows, summary = run_batch(labels, predict, items, top_k, progress=p)
    write_predictions(rows, summary, out)
    acc = "n/a (no labels)" if summary["accuracy"] is None else f"{summary['accuracy']:.3f} on {summary['labelled']} labelled files"
    typer.echo(f"{kind} model: {summary['classified']}/{summary['files']} files classified, {len(summary['failed'])} skipped; accuracy {acc} -> {out}")


@command()
def enrol(
    model: Annotated[Path, typer.Argument(help="An end-to-end .onnx model with an MLP head, or a bundled model by name (children).")],
    clips: Annotated[Path, typer.Argument(help="One child's clips: a folder per sound (label = folder name), as test-batch reads them.")],
    out: Annotated[Path, typer.Option(help="The speaker profile to write (JSON).")] = Path("profile.json"),
    reg: Annotated[float | None, typer.Option(min=1e-6, help="Pull towards the unadapted model (default: the one chosen on validation speakers).")] = None,
    trusted_hashes: Trusted = None,
) -> None:
    """Enrol a new child: fit a small speaker profile on a few clips per sound,
    which test-batch, live and serve (--profile) and the server's streams apply."""
    from phonemekit.deploy import bundled
    from phonemekit.deploy.batchtest import enrolment_clips, list_inputs
    from phonemekit.deploy.runtime import Classifier

    clf = Classifier.load(bundled.resolve(model), trusted=_trusted(trusted_hashes))
    waves, labels, skipped = enrolment_clips(list_inputs(clips, clf.labels))
    profile = clf.enrol(waves, labels, reg=reg)
    profile.save(out)
    missing = [lab for lab in clf.labels if lab not in profile.shots]
    typer.echo(f"enrolled {len(labels)} clips of {len(profile.shots)} sounds ({len(skipped)} files skipped) -> {out}")
    if missing:
        typer.echo(f"no clip of {len(missing)} sounds ({', '.join(missing[:12])}{', ...' if len(missing) > 12 else ''}): those are scored as before")


@command("test-onnx")
def test_onnx(
    run: Annotated[Path, typer.Argument(help="Run folder with an onnx/ export and predictions.npz.")],
    data: Annotated[Path | None, typer.Option(help="Manifest; default: the training manifest, restricted to the run's held-out clips.")] = None,
) -> None:
    """Parity and held-out accuracy of a run's exported ONNX files."""
    from phonemekit.deploy.export import evaluate_exports

    res = evaluate_exports(run, data)
    typer.echo(f"torch checkpoint: held-out top-1 {res['torch']['top1']:.3f} on {res['torch']['clips']} clips")
    for name, f in res["files"].items():
        typer.echo(f"{name}: held-out top-1 {f['top1']:.3f} on {f['clips']} clips ({f['precision']})")
    for form, par in res["parity"].items():
        typer.echo(f"parity {form}: top-1 agreement {par['top1_agreement']:.3f}, max |dp| {par['max_abs_diff']:.1e}")


@command()
def benchmark(
    json_out: Annotated[Path, typer.Option("--json", help="Results JSON; a markdown table is written beside it.")] = Path("runs/benchmark.json"),
    threads: Annotated[int | None, typer.Option(min=1, help="Threads for torch and ONNX Runtime; default: all cores.")] = None,
    runs: Annotated[int, typer.Option(min=10, help="Timed batch-1 head runs.")] = 300,
    encoders: Annotated[str, typer.Option(help="Encoders for the end-to-end figures, FAMILY or FAMILY=SOURCE ('' to skip).")] = "wav2vec2,wavlm,whisper",
    heads: Annotated[
        str | None,
        typer.Option(help="Heads to time, comma-separated (the first is the reference for the targets); default: the seed's head and the alternatives."),
    ] = None,
) -> None:
    """Measure head latency/throughput, end-to-end real-time factor and memory against the targets."""
    from phonemekit.deploy.benchmark import BENCH_HEADS, run_benchmark
    from phonemekit.deploy.benchtable import markdown, write_results

    res = run_benchmark(
        threads=threads, n=runs, encoders=tuple(e for e in encoders.split(",") if e), heads=tuple(h for h in heads.split(",") if h) if heads else BENCH_HEADS
    )
    md = write_results(res, json_out)
    typer.echo(markdown(res))
    log.info("benchmark -> %s, %s", json_out, md)


@command("benchmark-extract")
def benchmark_extract(
    json_out: Annotated[Path, typer.Option("--json", help="Results JSON; a markdown table is written beside it.")] = Path("runs/extract-benchmark.json"),
    encoders: Annotated[str, typer.Option(help="FAMILY or FAMILY=SOURCE, comma-separated.")] = "fbank,whisper,wavlm",
    clips: Annotated[int, typer.Option(min=4, help="Generated 1 s clips.")] = 48,
) -> None:
    """Measure feature extraction with the local engine and Ray (1 and 2 workers): clips/s, overhead, identical bytes."""
    from phonemekit.scale.benchmark import markdown, run_extract_benchmark, write_results

    res = run_extract_benchmark(encoders=tuple(e for e in encoders.split(",") if e), clips=clips)
    md = write_results(res, json_out)
    typer.echo(markdown(res))
    log.info("extraction benchmark -> %s, %s", json_out, md)


@command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders of trained models (tested on the same split).")],
    out: Annotated[Path, typer.Option(help="Folder for compare.json/.md; a report.json there is updated too.")] = Path("runs/compare"),
    target_group: Annotated[str | None, typer.Option(help="Group reported on its own, e.g. child.")] = None,
    speed: Annotated[bool, typer.Option(help="Also measure latency, size and memory.")] = True,
    threads: Annotated[int, typer.Option(min=1)] = 2,
) -> None:
    """Compare trained models side by side: accuracy, significance, speed, memory."""
    import functools

    from phonemekit.deploy.speed import measure_speed
    from phonemekit.evaluation.compare import compare_into_report
    from phonemekit.report.report import render

    cmp = compare_into_report(runs, out, target_group=target_group, speed_of=functools.partial(measure_speed, threads=threads) if speed else None)
    typer.echo(render("comparison", cmp, out))
    log.info("comparison -> %s", out / "compare.md")


@command()
def ensemble(
    runs: Annotated[list[Path], typer.Argument(help="Run folders of the members (trained on the same split).")],
    out: Annotated[Path, typer.Option(help="Folder for ensemble.json and ensemble.e2e.onnx; a report.json there is updated too.")] = Path("runs/ensemble"),
    export: Annotated[bool, typer.Option(help="Export the chosen ensemble as one ONNX file.")] = True,
    clips: Annotated[int, typer.Option(min=2, help="Clips in the parity check.")] = 16,
) -> None:
    """Fit averaging, weighted, vote and stacking ensembles on validation; report them on test."""
    from phonemekit.deploy.ensemble import ensemble_into_report

    rec = ensemble_into_report(runs, out, export=export, clips=clips)
    for method, r in rec["methods"].items():
        typer.echo(
            f"{method:9s} val top-1 {r['val_top1']:.3f}  test top-1 {r['top1']:.3f} ({r['top1_ci95'][0]:.3f}-{r['top1_ci95'][1]:.3f})"
            + ("  <- chosen on validation" if method == rec["chosen"] else "")
        )
