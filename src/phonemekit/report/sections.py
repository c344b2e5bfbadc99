"""Markdown renderers of the report's named sections (see `report.report`).
Each renders its section's data alone, so `report.md` can always be rebuilt
from `report.json`."""

from __future__ import annotations

from pathlib import Path

from phonemekit.report.registry import renderer


def table_markdown(t: dict, title: str = "") -> list[str]:
    """A live table (`live.bench.live_table`) as markdown lines."""
    f = lambda x, k="{:.0f}": "-" if x is None else k.format(x)  # noqa: E731
    mark = lambda r, k: "" if r["meets"][k] else " ✗"  # noqa: E731
    lines = [title, ""] if title else []
    lines += ["| preset | noise | detected | false triggers | accuracy | latency after offset mean / p90 ms | flicker |", "|---|---|---|---|---|---|---|"]
    for r in t["rows"]:
        noise = "none" if r["noise"] == "none" else f"{r['noise']} {r['snr_db']:g} dB SNR"
        lines.append(
            f"| {r['preset']} | {noise} | {r['detected']}/{r['clips']} ({f(r['detection_rate'], '{:.1%}')}){mark(r, 'detection_rate')} | "
            f"{r['false_triggers']} ({f(r['false_trigger_rate'], '{:.1%}')}){mark(r, 'false_trigger_rate')} | {f(r['accuracy'], '{:.3f}')} | "
            f"{f(r['latency_offset_ms_mean'])}{mark(r, 'latency_offset_ms_mean')} / {f(r['latency_offset_ms_p90'])} | "
            f"{f(r['flicker_rate'], '{:.1%}')}{mark(r, 'flicker_rate')} |"
        )
    if t.get("noise_only"):
        lines += [
            "",
            f"Noise alone ({t['noise_only_seconds']:.0f} s each, 10 dB below the sounds' level): segments opened "
            + ", ".join(f"{k} {v}" for k, v in t["noise_only"].items())
            + ".",
        ]
    lines += ["", "Targets: " + ", ".join(f"{k} {v}" for k, v in t["targets"].items()) + "; ✗ marks a miss."]
    return lines


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _ci(ci, signed: bool = False) -> str:
    if not ci or any(v != v for v in ci):  # absent or NaN (fewer than two speakers)
        return "n/a"
    f = (lambda v: f"{100 * v:+.1f}") if signed else (lambda v: f"{100 * v:.1f}")
    return f"{f(ci[0])} to {f(ci[1])}"


def _confused(pairs: list[dict]) -> str:
    return "Most confused: " + ", ".join(f"{c['true']} -> {c['predicted']} ({c['count']})" for c in pairs)


@renderer("train")
def train(report: dict, out: Path) -> str:
    """The models trained on one split, their baselines and the comparisons between them."""
    sp = report["split"]
    lines = [f"Split: **{sp['kind']}**. Test speakers (never seen in training): {', '.join(sp['test_speakers'])}.", ""]
    if report["target_group"]:
        lines += [f"Target group: **{report['target_group']}** (reported on its own; it decides the best model).", ""]
    lines += [
        "Top-1 on the held-out speakers with two 95% intervals: resampling clips, and resampling speakers (the honest one: "
        "a speaker's clips are not independent, and there are few speakers). Against the baseline: the top-1 difference to a "
        "logistic regression on the same encoder's standardised pooled features, same split, with McNemar's exact p.",
        "",
    ]
    lines += [
        "| model | encoder | weights | head | trained | top-1 | CI clips | CI speakers | top-3 | macro-F1 | target group | vs baseline (p) | leaky split | epochs | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in report["models"].items():
        enc = f"{m['encoder']['family']} `{m['encoder']['source']}`" + ("" if m["encoder"].get("layer", -1) == -1 else f" layer {m['encoder']['layer']}")
        vs = m.get("vs_baseline")
        vs = "-" if vs is None else f"{100 * vs['top1_diff']:+.1f} ({vs['mcnemar_p']:.2g})"
        lines.append(
            f"| {name} | {enc} | {m['weights']} | {m['head']} | {m['trained']} | {_pct(m['top1'])} | {_ci(m['top1_ci95'])} | "
            f"{_ci(m.get('top1_ci95_speakers'))} | {_pct(m['top3'])} | {m['macro_f1']:.3f} | {_pct(m['target_top1'])} | {vs} | "
            f"{_pct(m['leaky_top1'])} | {m['epochs']} | {m['train_seconds']:.0f} |"
        )
    lines += ["", f"Best model (by {report['headline']}): **{report['best_model']}**", ""]
    if report.get("baselines"):
        lines += [
            "## Baselines (scikit-learn logistic regression, standardised mean+std pooled features, C chosen on validation)",
            "",
            "| baseline | weights | C | top-1 | CI clips | CI speakers | top-3 | target group |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, b in report["baselines"].items():
            lines.append(
                f"| {name} | {b['weights']} | {b['C']:g} | {_pct(b['top1'])} | {_ci(b['top1_ci95'])} | {_ci(b['top1_ci95_speakers'])} | "
                f"{_pct(b['top3'])} | {_pct(b.get('target_top1'))} |"
            )
        lines.append("")
    if report.get("encoder_vs_logmel"):
        lines += [
            "## Learned encoder vs log-mel, head by head",
            "",
            "| head | model | log-mel model | top-1 difference | CI speakers | McNemar p |",
            "|---|---|---|---|---|---|",
        ]
        for e in report["encoder_vs_logmel"]:
            lines.append(
                f"| {e['head']} | {e['model']} | {e['logmel_model']} | {100 * e['top1_diff']:+.1f} points | "
                f"{_ci(e['diff_ci95'], signed=True)} | {e['mcnemar_p']:.2g} |"
            )
        lines.append("")
    for family, h in report.get("heads_by_encoder", {}).items():
        lines += [
            f"Heads on {family}: best **{h['best']}**; "
            + "; ".join(f"vs {other}: {100 * v['top1_diff']:+.1f} points (p = {v['mcnemar_p']:.2g})" for other, v in h["vs"].items()),
            "",
        ]
    for name, m in report["models"].items():
        if m.get("layer_weights"):
            lines += [f"Learned layer weights of {name} (embeddings, then layer 1 up): " + ", ".join(f"{w:.2f}" for w in m["layer_weights"]), ""]
    gaps = [(n, m["leaky_top1"] - m["top1"]) for n, m in report["models"].items() if m["leaky_top1"] is not None]
    if gaps:
        lines += [
            "## Why the split matters",
            "",
            "The leaky column trains the same model with the same settings on a random clip-level split, "
            "where other takes of the test speakers are in training. It is what a careless evaluation would report:",
            "",
        ]
        lines += [
            f"- {n}: leaky {_pct(report['models'][n]['leaky_top1'])} vs honest {_pct(report['models'][n]['top1'])} (overstated by {100 * g:.1f} points)"
            for n, g in gaps
        ]
        lines.append("")
    if any(m["weights"] == "random" for m in report["models"].values()):
        lines += [
            "Models marked `random` use randomly initialised encoders (no pretrained weights were given), "
            "so their numbers say nothing about what pretrained wav2vec2 or WavLM features achieve.",
            "",
        ]
    for note in report.get("notes", []):
        lines += [f"Note: {note}", ""]
    lines += ["![models](figures/models.png)", ""]
    lines += _verdicts(report)
    for name, m in report["models"].items():
        lines += [f"## {name}", ""]
        lines += ["Per speaker: " + ", ".join(f"{s} {_pct(v)}" for s, v in m["per_speaker"].items()), ""]
        lines += ["Per group: " + ", ".join(f"{g} {_pct(v['top1'])} ({v['speakers']} speakers)" for g, v in m["per_group"].items()), ""]
        if m["confused_pairs"]:
            lines += [_confused(m["confused_pairs"]), ""]
        lines += [f"![confusion {name}](figures/confusion-{name}.png)", ""]
        if (out / "figures" / f"curves-{name}.png").exists():
            lines += [f"![curves {name}](figures/curves-{name}.png)", ""]
    return "\n".join(lines)


def _verdicts(report: dict) -> list[str]:
    """The known-target table: calibrated accept/reject for the sound the game asked for."""
    rows = {n: m["verdict"] for n, m in report["models"].items() if m.get("verdict")}
    if not rows:
        return []
    target = report.get("target_group")
    any_v = next(iter(rows.values()))
    lines = [
        "## Did the child say it? Calibrated verdicts",
        "",
        "A game asks for one sound and accepts or rejects the attempt. Temperature scaling and per-sound thresholds are fitted "
        f"on the validation speakers for a target false-accept rate of {_pct(any_v['target_far'])} (sounds with too few "
        "validation clips use one global threshold); the rates below are on the held-out test speakers, over every (clip, asked "
        "sound) pair: a false accept is a clip of another sound accepted, a false reject a genuine attempt rejected. "
        "ECE: expected calibration error of the top-1 confidence (15 bins).",
        "",
        "ECE is shown on the validation speakers the temperature was fitted on, and on the test speakers: with few speakers "
        "the two can disagree (validation voices harder than test ones make the fitted temperature soften a model that "
        "was already calibrated on test), which is why both are here.",
        "",
        f"| model | T | ECE val before / after | ECE test before / after | false accepts | false rejects | {target or 'target group'} FA | "
        f"{target or 'target group'} FR | own thresholds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in rows.items():
        g = (v.get("per_group") or {}).get(target) or {}
        lines.append(
            f"| {name} | {v['temperature']:.2f} | {v['ece_val']['before']:.3f} / {v['ece_val']['after']:.3f} | "
            f"{v['ece_test']['before']:.3f} / {v['ece_test']['after']:.3f} | {_pct(v['test']['far'])} | "
            f"{_pct(v['test']['frr'])} | {_pct(g.get('far'))} | {_pct(g.get('frr'))} | {v['own_thresholds']} |"
        )
    lines += ["", "![DET curves](figures/det.png)", ""]
    best = report.get("best_model")
    v = rows.get(best)
    if v:
        worst = sorted(v["test"]["per_sound"].items(), key=lambda kv: -(kv[1]["frr"] + (kv[1]["far"] or 0)))[:8]
        lines += [
            f"Hardest sounds for **{best}** at its operating point: " + ", ".join(f"{lab} (FA {_pct(r['far'])}, FR {_pct(r['frr'])})" for lab, r in worst),
            "",
            f"![reliability {best}](figures/reliability-{best}.png)",
            "",
            f"Per sound, **{best}** on the held-out speakers (every model's are in report.json):",
            "",
            "| sound | threshold | false accepts | false rejects | clips |",
            "|---|---|---|---|---|",
        ]
        lines += [f"| {lab} | {r['threshold']:.4f} | {_pct(r['far'])} | {_pct(r['frr'])} | {r['clips']} |" for lab, r in v["test"]["per_sound"].items()]
        lines.append("")
    return lines


@renderer("loso")
def loso(data: dict, out: Path) -> str:
    """Leave-one-speaker-out over a group's speakers, and the paired difference of two models."""
    group = data.get("group")
    lines = [
        f"## Leave-one-speaker-out{' (' + group + ' speakers held out)' if group else ''}",
        "",
        "One model per held-out speaker, trained on all other speakers; every clip is predicted by a model that never heard its speaker.",
        "",
        "| model | top-1 | CI clips | CI speakers | per held-out speaker |",
        "|---|---|---|---|---|",
    ]
    # Each LOSO model stands beside the logistic regression on pooled features, fitted on the same folds.
    for name, m in [*data["models"].items(), *data.get("baselines", {}).items()]:
        ci = lambda c: f"{c[0]:.3f}-{c[1]:.3f}"  # noqa: E731  (the top-1 column's scale)
        lines.append(
            f"| {name} | {m['top1']:.3f} | {ci(m['top1_ci95'])} | {ci(m['top1_ci95_speakers'])} | "
            + ", ".join(f"{s} {v:.2f}" for s, v in m["fold_top1"].items())
            + " |"
        )
    lines.append("")
    against = [(name, m["vs_baseline"]) for name, m in data["models"].items() if m.get("vs_baseline")]
    for name, v in against:
        lines.append(
            f"{name} vs {v['baseline']}: {100 * v['top1_diff']:+.1f} points "
            f"(95% CI resampling speakers {_ci(v['diff_ci95'], signed=True)}; McNemar p = {v['mcnemar_p']:.2g})."
        )
    if against:
        lines.append("")
    v = data.get("difference")
    if v:
        a, b = v["models"]
        lines += [
            f"{a} vs {b} on the same held-out speakers' clips: {100 * v['top1_diff']:+.1f} points "
            f"(95% CI resampling speakers {_ci(v['diff_ci95'], signed=True)}; McNemar p = {v['mcnemar_p']:.2g}).",
            "",
        ]
    return "\n".join(lines)


@renderer("unseen")
def unseen(res: dict, out: Path) -> str:
    """Models and baselines on a voice family no training speaker belongs to."""
    speakers = sorted(next(iter(res["models"].values()))["per_speaker"])
    lines = [
        f"## {res.get('title', 'Held-out voice family')}",
        "",
        "Trained on the corpus above; tested on every clip of a voice family no training speaker belongs to.",
        "",
        "| model | weights | top-1 | top-3 | " + " | ".join(speakers) + " |",
        "|---|---|---|---|" + "---|" * len(speakers),
    ]
    rows = list(res["models"].items()) + list(res["baselines"].items())
    for name, m in sorted(rows, key=lambda kv: -kv[1]["top1"]):
        lines.append(f"| {name} | {m['weights']} | {m['top1']:.3f} | {m['top3']:.3f} | " + " | ".join(f"{m['per_speaker'][s]:.3f}" for s in speakers) + " |")
    return "\n".join(lines) + "\n"


@renderer("embedding_maps")
def embedding_maps(maps: dict, out: Path) -> str:
    """2-D maps of each model's pooled encoder features on the held-out clips."""
    lines = ["## Embedding maps (held-out clips, pooled encoder features)", ""]
    for name, path in maps.items():
        lines += [f"![embedding map {name}]({path})", ""]
    return "\n".join(lines)


@renderer("comparison")
def comparison(cmp: dict, out: Path) -> str:
    """Models side by side on the same held-out clips: accuracy, speed, memory, significance."""
    lines = [
        "## Comparison (same held-out clips)",
        "",
        "| model | weights | top-1 (95% CI) | top-3 | target group | params | head ms (1x100 frames, ONNX) | end-to-end ms per 1 s audio | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    mb = lambda x: "-" if x is None else f"{x:.0f}"  # noqa: E731
    for n, m in cmp["models"].items():
        t = "-" if m.get("target_top1") is None else f"{m['target_top1']:.3f}"
        lines.append(
            f"| {n} | {m['weights']} | {m['top1']:.3f} ({m['top1_ci95'][0]:.3f}-{m['top1_ci95'][1]:.3f}) | {m['top3']:.3f} | {t} | "
            f"{m.get('params', 0) / 1e6:.2f}M | {m.get('head_ms', float('nan')):.2f} | {m.get('e2e_ms_per_s_audio', float('nan')):.1f} "
            f"({m.get('e2e_engine', '-')}) | {mb(m.get('peak_rss_mb'))} |"
        )
    lines += [
        "",
        f"Best model ({cmp['headline']}): **{cmp['best_model']}**" + (f"; fastest end to end: **{cmp['faster_model']}**." if cmp.get("faster_model") else "."),
        "",
        "Differences: 95% CI resampling speakers; McNemar's exact test on the clips.",
        "",
        "| pair | top-1 difference (95% CI) | McNemar p | significant |",
        "|---|---|---|---|",
    ]
    for pair, s in cmp["pairs"].items():
        lines.append(
            f"| {pair} | {s['top1_diff']:+.3f} ({s['diff_ci95'][0]:+.3f} to {s['diff_ci95'][1]:+.3f}) | {s['mcnemar_p']:.3g} | "
            f"{'yes' if s['significant'] else 'no'} |"
        )
    if cmp.get("figure"):
        lines += ["", f"![accuracy vs latency]({cmp['figure']})"]
    return "\n".join(lines) + "\n"


@renderer("ensembles")
def ensembles(rec: dict, out: Path) -> str:
    """Ensembles fit on validation, reported on test."""
    lines = [
        "## Ensembles (fit on validation, reported on test)",
        "",
        f"Members: {', '.join(rec['members'])}. Chosen on validation: **{rec['chosen']}**.",
        "",
        "| method | validation top-1 | test top-1 (95% CI) | top-3 |",
        "|---|---|---|---|",
    ]
    for method, r in rec["methods"].items():
        lines.append(f"| {method} | {r['val_top1']:.3f} | {r['top1']:.3f} ({r['top1_ci95'][0]:.3f}-{r['top1_ci95'][1]:.3f}) | {r['top3']:.3f} |")
    if groups := rec["methods"][rec["chosen"]].get("per_group"):
        lines += ["", "The chosen ensemble on test, by group: " + ", ".join(f"{g} {v['top1']:.3f}" for g, v in groups.items()) + "."]
    if rec.get("verdict"):
        v = rec["verdict"]
        lines += [
            "",
            f"Verdicts of the chosen ensemble (calibrated on validation, T = {rec['calibration']['temperature']:.2f}): "
            f"false accepts {100 * v['far']:.1f}%, false rejects {100 * v['frr']:.1f}% on test; ECE {v['ece_test_before']:.3f} -> "
            f"{v['ece_test_after']:.3f}.",
        ]
    if "onnx" in rec:
        lines += [
            "",
            f"Exported as one file: `{rec['onnx']['path']}` ({rec['onnx']['bytes'] / 1e6:.1f} MB), top-1 agreement with torch "
            f"{rec['onnx']['parity']['top1_agreement']:.3f} on {rec['onnx']['parity']['clips']} clips.",
        ]
    return "\n".join(lines) + "\n"


@renderer("live")
def live(data: dict, out: Path) -> str:
    """A replayed file of held-out clips: the best model through every preset and noise condition, the others with the default."""
    if "tables" not in data:  # written by an older phonemekit: shown once the live step runs again
        return "## Live replay\n\nRecorded in an older format; `phonemekit demo --force live` measures it again.\n"
    excerpt = f"; the other models on its first {data['others_clips']}" if data.get("others_clips", data["clips"]) < data["clips"] else ""
    lines = [
        f"## Live replay ({data['clips']} held-out clips{excerpt})",
        "",
        "Detected: sounds a final label segment overlaps. False triggers: segments overlapping no sound. Latency: from the end "
        "of each sound to its final label (VAD hangover plus compute). Flicker: segments whose shown label changed after it "
        "first appeared. Noise is generated (pink, mains hum, knocks) and mixed at the SNR shown, relative to the sounds' level.",
        "",
    ]
    best = data.get("best_model")
    for name, t in data["tables"].items():
        lines += table_markdown(t, f"### {name}" + (" (best model)" if name == best else "")) + [""]
    return "\n".join(lines)


@renderer("alignment")
def alignment(data: dict, out: Path) -> str:
    """How an imported corpus was aligned, and which phones became examples."""
    failed = {k.removeprefix("failed_"): v for k, v in data.items() if k.startswith("failed_")}
    dropped = {k.removeprefix("dropped_"): v for k, v in data.items() if k.startswith("dropped_")}
    lines = [
        f"## Alignment ({data['aligner']})",
        "",
        f"{data.get('utterances_aligned', 0)} utterances aligned" + (f"; not aligned: {failed}" if failed else "") + ". "
        f"{data.get('words', 0)} words, {data.get('phones', 0)} phones in words whose phone count matches the canonical one "
        f"({data.get('words_count_mismatch', 0)} utterances with another word count skipped). "
        f"{data['kept']} phones kept as examples ({data['kept_why']}); dropped: {dropped or 'none'}.",
        "",
    ]
    if b := data.get("boundaries"):
        lines += [f"Boundaries placed on {b['data']}:", "", "| aligner | boundaries | median error | within 20 ms | within 50 ms | "
                  "sequences not aligned | CPU s per audio s |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, v in b["aligners"].items():
            med = "n/a" if v["median_error_ms"] is None else f"{v['median_error_ms']:.0f} ms"
            lines.append(f"| {name} | {v['boundaries']} | {med} | {_pct(v['within_20ms'])} | {_pct(v['within_50ms'])} | {v['failed']} | "
                         f"{v['seconds_per_audio_second']:.3f} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


@renderer("transfer")
def transfer(data: dict, out: Path) -> str:
    """The same preset trained on synthetic or on real speech, each tested on both."""
    lines = [
        f"## Transfer ({data['model']})",
        "",
        "Trained on the synthetic demo corpus (its training voices) or on the real corpus (its train speakers); each tested on the "
        "synthetic held-out voices and on the real test speakers. Each clip encoded alone.",
        "",
        "| trained on | tested on | top-1 | CI speakers | per group | clips |",
        "|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        groups = ", ".join(f"{g} {v:.3f}" for g, v in r["per_group"].items())
        lines.append(f"| {r['trained_on']} | {r['tested_on']} | {r['top1']:.3f} | {_ci(r['top1_ci95_speakers'])} | {groups} | {r['clips']} |")
    return "\n".join(lines) + "\n"


@renderer("per")
def per(data: dict, out: Path) -> str:
    """The phone recogniser: phone error rate on whole utterances."""
    t = data["test"]
    lines = [
        f"## Phone recogniser ({data['model']}: {data['encoder']['family']} frames, {data['head']} head, CTC)",
        "",
        f"Trained on whole utterances of the train speakers ({data['utterances']['train']}; {data['utterances']['val']} of validation "
        f"speakers stop it, after {data['epochs']} epochs); targets: {data['targets']}. Greedy decoding. PER = (substitutions + "
        "deletions + insertions) / reference phones, on the test speakers; 95% interval resampling speakers.",
        "",
        "| group | PER | CI speakers | sub | del | ins | phones | utterances | speakers |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for g, v in [*t["per_group"].items(), ("all", t)]:
        lines.append(f"| {g} | {_pct(v['per'])} | {_ci(v['per_ci95_speakers'])} | {v['substitutions']} | {v['deletions']} | {v['insertions']} | "
                     f"{v['phones']} | {v['utterances']} | {v['speakers']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


@renderer("context")
def context(data: dict, out: Path) -> str:
    """The sentence tagger: each phone read with the phones around it."""
    lines = [
        f"## Phones in their sentence ({data['model']}; {data['encoder']['family']} `{data['encoder']['source']}`)",
        "",
        f"Trained on the train speakers' aligned utterances ({data['utterances']['train']}), epoch chosen on the validation speakers' "
        f"({data['utterances']['val']}; top-1 {_pct(data['val_top1'])} at epoch {data['best_epoch']} of {data['epochs']}), tested on "
        f"the same {data['n']} test phones as the clip models; 95% interval resampling speakers. Inputs are acoustic and positional "
        "only (no phone names).",
        "",
        "| group | top-1 | CI speakers | top-3 | phones | speakers |",
        "|---|---|---|---|---|---|",
    ]
    for g, v in data["per_group"].items():
        lines.append(f"| {g} | {_pct(v['top1'])} | {_ci(v['top1_ci95_speakers'])} | {_pct(v['top3'])} | {v['clips']} | {v['speakers']} |")
    lines.append(f"| all | {_pct(data['top1'])} | {_ci(data['top1_ci95_speakers'])} | {_pct(data['top3'])} | {data['n']} | |")
    if vs := data.get("vs_slice"):
        lines += [
            "",
            f"Against {vs['model']} (each phone's frames sliced from the encoded sentence, pooled alone), on the same phones: "
            f"{100 * vs['top1_diff']:+.1f} points ({_ci(vs['diff_ci95'], signed=True)} over speakers; McNemar p = {vs['mcnemar_p']:.2g}).",
        ]
    if data.get("confused_pairs"):
        lines += ["", _confused(data["confused_pairs"])]
    return "\n".join(lines) + "\n"


@renderer("pronunciation")
def pronunciation(data: dict, out: Path) -> str:
    """Reading verdicts on real words: the minimal-pair benchmark."""
    lines = [
        f"## Reading verdicts on real words ({data['model']})",
        "",
        data["method"],
        "",
        "| group | words | sounds | false rejects | substitutions | caught | heard right | one sound more | reported missing | "
        "at val threshold: false rejects | caught |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for g, v in data["minimal_pairs"].items():
        a = v.get("at_threshold") or {}
        lines.append(f"| {g} | {v['words']} | {v['sounds']} | {_pct(v['false_reject_rate'])} | {v['substitutions']} | "
                     f"{_pct(v['substitution_recall'])} | {_pct(v['heard_accuracy'])} | {v['insertions']} | {_pct(v['missing_recall'])} | "
                     f"{_pct(a.get('false_reject_rate'))} | {_pct(a.get('substitution_recall'))} |")  # fmt: skip
    lines += ["", "By class of sound (test children where present): false rejects / substitutions caught.", "",
              "| class | sounds | false rejects | substitutions | caught |", "|---|---|---|---|---|"]  # fmt: skip
    group = "child" if "child" in data["minimal_pairs"] else next(iter(data["minimal_pairs"]), None)
    for c, v in (data["minimal_pairs"].get(group) or {}).get("by_class", {}).items():
        lines.append(f"| {c} | {v['sounds']} | {_pct(v['false_reject_rate'])} | {v['substitutions']} | {_pct(v['substitution_recall'])} |")
    if pcc := data.get("phone_pcc"):
        groups = ", ".join(f"{g} {v['pcc']}" for g, v in pcc["per_group"].items())
        lines += ["", f"Against the experts' phone scores ({pcc['phones']} scored phones of the test speakers, the right and the wrong): "
                  f"Pearson correlation {pcc['pcc']} ({groups}), the calibrated probability of the canonical sound against their mean."]  # fmt: skip
    if data.get("figure"):
        lines += ["", f"![minimal pairs]({data['figure']})"]
    return "\n".join(lines) + "\n"


@renderer("enrolment")
def enrolment(data: dict, out: Path) -> str:
    """Enrolment of a new speaker: top-1 by clips per sound, beside the same clips unadapted."""
    c = data["choice"]
    lines = [
        f"## Enrolment of a new speaker ({data['model']})",
        "",
        data["method"],
        "",
        f"Penalty chosen on {c['on']}: reg {c['reg']} (" + "; ".join(
            f"reg {r}: " + ", ".join(f"{k} {v:.3f}" for k, v in fig.items()) for r, fig in c["by_reg"].items()
        ) + "; unadapted: " + ", ".join(f"{k} {v:.3f}" for k, v in c["unadapted_top1"].items()) + ").",
        "",
        "| tested on | clips per sound | top-1 | CI speakers | unadapted | gain | speakers | test clips |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for g, by in data["by_group"].items():
        for k, v in by.items():
            gain = "n/a" if v["top1"] is None or v["unadapted_top1"] is None else f"{100 * (v['top1'] - v['unadapted_top1']):+.1f}"
            top1 = "n/a" if v["top1"] is None else f"{v['top1']:.3f}"
            base = "n/a" if v["unadapted_top1"] is None else f"{v['unadapted_top1']:.3f}"
            lines.append(f"| {g} | {k} | {top1} | {_ci(v['top1_ci95_speakers'])} | {base} | {gain} | {v['speakers']} | {v['test_clips']} |")
    return "\n".join(lines) + "\n"


@renderer("augmentation")
def augmentation(data: dict, out: Path) -> str:
    """The augmentation effect table: each condition against the plain one on the same clips."""
    lines = [
        f"## Augmentation, measured ({data['model']})",
        "",
        data["method"],
        "",
        "| condition | test children | gain | test adults | gain | synthetic held-out | gain | val top-1 | train clips | epochs | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in data["conditions"]:
        lines.append(f"| {c['condition']} | {_held_out_cells(c)} | {c['train_clips']} | {c['epochs']} | {c['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def _held_out_cells(r: dict) -> str:
    """Test children, adults and synthetic voices, each with its gain, then validation top-1 (`recipes.augmentation`'s figures)."""
    gain = r.get("gain") or {}
    pts = lambda x: "n/a" if x is None else f"{100 * x:+.1f}"  # noqa: E731
    child, adult = (f"{r['per_group'][k]['top1']:.3f}" if k in r["per_group"] else "n/a" for k in ("child", "adult"))
    syn = "n/a" if r["synthetic_top1"] is None else f"{r['synthetic_top1']:.3f}"
    return f"{child} | {pts(gain.get('child'))} | {adult} | {pts(gain.get('adult'))} | {syn} | {pts(gain.get('synthetic'))} | {r['val_top1']:.3f}"


@renderer("finetune")
def finetune(data: dict, out: Path) -> str:
    """Fine-tuning the top encoder blocks beside the frozen model on the same clips."""
    lines = [
        f"## Fine-tuning beside the frozen model ({data['model']})",
        "",
        data["method"],
        "",
        "| model | test children | gain | test adults | gain | synthetic held-out | gain | val top-1 | epochs | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in [("frozen", data["frozen"]), *[(f"top {r['layers']} block(s) tuned", r) for r in data["runs"]]]:
        lines.append(f"| {name} | {_held_out_cells(r)} | {r['epochs']} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


@renderer("pipeline")
def pipeline(data: dict, out: Path) -> str:
    """Wall time and peak memory of each step, as last run (`steps.jsonl` keeps every run)."""
    lines = [
        "## Pipeline time",
        "",
        "Each step's latest run on this machine; a step skipped this time (done earlier, inputs unchanged) "
        "shows the figures of the run that did it, and a step that resumed (models already trained are reused) shows that "
        "shorter run. The total adds these figures: a run from scratch when every step ran this time. Peak RSS is the main "
        "process's; training workers (`--workers`) hold their own features and models beside it.",
        "",
        "| step | seconds | peak RSS MB | finished | ran this time |",
        "|---|---|---|---|---|",
    ]
    for t in data["steps"]:
        lines.append(f"| {t['step']} | {t['seconds']:.0f} | {t['peak_rss_mb']:.0f} | {t['finished']} | {'yes' if t['this_run'] else 'no'} |")
    lines += [f"| **total** | **{data['total_seconds']:.0f}** ({data['total_seconds'] / 60:.1f} min) | | | |"]
    return "\n".join(lines) + "\n"
