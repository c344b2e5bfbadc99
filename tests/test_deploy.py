"""Export, runtime, batch test, comparison, ensembles, benchmark (tiny sizes)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from phonemekit.config import EncoderConfig, HeadConfig, ModelConfig, TrainConfig
from phonemekit.data.audio import load_audio
from phonemekit.errors import DataError, IntegrityError


def _cfg(name, kind, encoder=None, **train):
    opts = {"proj": 16, "hidden": 16} if kind == "ctc" else ({"channels": 16} if kind == "conv-ctc" else {"hidden": [16]})
    return ModelConfig(
        name=name,
        encoder=encoder or EncoderConfig(family="fbank", source="fbank"),
        head=HeadConfig(kind=kind, options=opts),
        train=TrainConfig(epochs=3, batch_size=8, lr=3e-3, **train),
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dirs):
    """Three tiny models trained on one split by train_all, as the demo does."""
    from phonemekit.data.manifest import load_manifest, prepare
    from phonemekit.training.experiment import train_all

    from .conftest import make_corpus

    base = tmp_path_factory.mktemp("deploy")
    make_corpus(base / "rec")
    prepare(base / "rec", base / "data")
    m = load_manifest(base / "data")
    models = [
        _cfg("a-ctc", "ctc"),
        _cfg("b-mlp", "mlp"),
        _cfg("c-w2v", "conv-ctc", EncoderConfig(family="wav2vec2", source=str(tiny_model_dirs["wav2vec2"])), finetune_layers=-1),
    ]
    train_all(m, models, base / "out", leaky={"b-mlp"}, cache_root=base / "cache", show_speakers=True)
    waves = [load_audio(m.audio_path(r)).samples for r in m.rows[::7]]
    return {"out": base / "out", "runs": [base / "out" / "models" / c.name for c in models], "waves": waves, "manifest": m, "cache": base / "cache"}


def test_report_schema(trained):
    report = json.loads((trained["out"] / "report.json").read_text())["sections"]["train"]
    assert set(report["split"]) == {"kind", "train_speakers", "val_speakers", "test_speakers"}
    assert report["labels"] == ["aa", "ee", "sh"] and report["best_model"] in report["models"]
    for m in report["models"].values():
        assert {"encoder", "weights", "head", "top1", "top3", "macro_f1", "top1_ci95", "leaky_top1", "per_speaker", "train_seconds", "checkpoint"} <= set(m)
        assert 0 <= m["top1_ci95"][0] <= m["top1"] <= m["top1_ci95"][1] <= 1
        assert set(m["per_speaker"]) == set(report["split"]["test_speakers"])
    assert report["models"]["b-mlp"]["leaky_top1"] is not None and report["models"]["a-ctc"]["leaky_top1"] is None
    assert report["models"]["c-w2v"]["weights"] == "pretrained"
    md = (trained["out"] / "report.md").read_text()
    assert "Why the split matters" in md and (trained["out"] / "figures" / "confusion-a-ctc.png").stat().st_size > 1000


def test_embedding_maps_are_drawn_and_reported(trained):
    from phonemekit.recipes.demo import embedding_maps

    maps = embedding_maps(trained["out"], trained["manifest"], trained["runs"], cache_root=trained["cache"])
    assert set(maps) == {"a-ctc", "b-mlp", "c-w2v"}
    for rel in maps.values():
        assert (trained["out"] / rel).stat().st_size > 1000
    assert "Embedding maps" in (trained["out"] / "report.md").read_text()


@pytest.mark.parametrize("idx", [0, 1, 2])  # 2: a transformers wav2vec2 end to end
def test_export_both_forms_with_parity_and_metadata(trained, idx):
    from phonemekit.deploy.export import export_run
    from phonemekit.deploy.runtime import Classifier

    run = trained["runs"][idx]
    rec = export_run(run, trained["waves"][:6], int8=(idx == 0))
    for form in ("head", "e2e"):
        f = rec["files"][form]
        assert f["parity"]["top1_agreement"] == 1.0 and f["parity"]["max_abs_diff"] < 1e-3
    clf = Classifier.load(run / "onnx" / f"{run.name}.e2e.onnx")
    side = json.loads((run / "model.json").read_text())
    assert clf.labels == side["labels"] and clf.meta["checkpoint_sha256"] == side["sha256"]
    assert clf.sample_rate == 16000 and clf.meta["encoder_spec"]["family"] == side["encoder_spec"]["family"]
    top = clf.classify(trained["waves"][0])
    assert len(top) == 3 and abs(sum(p for _, p in clf.classify(trained["waves"][0], top_k=3)) - sum(sorted(clf.probs([trained["waves"][0]])[0])[-3:])) < 1e-6
    if idx == 0:
        assert "kept" in rec["files"]["e2e"]["int8"] and rec["files"]["e2e"]["int8"]["reason"]
    shapes = {o.name: o.shape for o in clf.session.get_outputs()}
    assert "log_probs" in shapes
    if "frame_log_probs" in shapes:  # the frame axis is declared dynamic
        assert isinstance(shapes["frame_log_probs"][1], str), shapes
    # Traced on two clips of one length class, the graph must follow any
    # length and a padded batch: torch on each clip alone is the reference.
    from phonemekit.deploy.export import torch_probs
    from phonemekit.runs import Run

    rng = np.random.default_rng(idx)
    odd = [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in (2_400, 37_000, 9_001)]
    ref = torch_probs(Run(run).load(with_encoder=True), odd)
    np.testing.assert_allclose(clf.probs(odd, batch_size=3), ref, atol=1e-4)
    np.testing.assert_allclose(np.stack([clf.probs([w])[0] for w in odd]), ref, atol=1e-4)
    # The exported CTC scorer is exact up to the model's clip limit; longer input is refused, not misjudged.
    limit_s = clf.meta["max_frames"] / clf.meta["frame_rate"]
    assert limit_s >= 10.0
    with pytest.raises(DataError, match="longer than"):
        clf.probs([np.zeros(int((limit_s + 1) * 16000), np.float32)])


def test_calibration_travels_from_checkpoint_to_onnx_and_gives_the_same_verdicts(trained):
    from phonemekit.deploy.export import export_run
    from phonemekit.deploy.runtime import Classifier
    from phonemekit.evaluation.calibration import fit_temperature
    from phonemekit.runs import Run

    run = Run(trained["runs"][1])
    cal = run.calibration
    assert cal is not None and run.verify()  # attached after training, digest renewed
    val = run.predictions("val")
    assert cal.temperature == pytest.approx(fit_temperature(val.scores, val.y))  # fitted on validation speakers
    export_run(run.path, trained["waves"][:4], forms=("e2e",), int8=False)
    clf = Classifier.load(run.onnx("e2e"))
    assert clf.calibration == cal
    wave = trained["waves"][0]
    p = clf.probs([wave])[0]
    for label in clf.labels:
        v = clf.verdict(wave, label)
        assert v == {**cal.verdict(p, clf.labels, label), "top_k": v["top_k"]} and v["calibrated"]
        assert v["accepted"] == (v["probability"] >= cal.threshold_of(label))
    with pytest.raises(Exception, match="not a label"):
        clf.verdict(wave, "zz")
    section = json.loads((trained["out"] / "report.json").read_text())["sections"]["train"]
    v = section["models"][run.name]["verdict"]
    assert v["temperature"] == cal.temperature and 0 <= v["test"]["far"] <= 1 and 0 <= v["test"]["frr"] <= 1
    assert (trained["out"] / "figures" / "det.png").stat().st_size > 1000
    assert "Calibrated verdicts" in (trained["out"] / "report.md").read_text()


def test_an_int8_copy_loads_with_the_metadata_of_its_fp32_file(trained, tmp_path):
    """The quantizer adds a metadata entry of its own; the int8 file keeps the
    fp32 file's entries (calibration included), changes the precision, and loads."""
    from phonemekit.deploy.export import export_run, quantize_form
    from phonemekit.deploy.runtime import Classifier
    from phonemekit.runs import Run

    run = Run(trained["runs"][1])
    export_run(run.path, trained["waves"][:4], forms=("e2e",), int8=False)
    rec = quantize_form(run.onnx("e2e"), tmp_path / "m.int8.onnx", "e2e", trained["waves"][:4], run.load(with_encoder=True), min_agreement=0.0, min_speedup=0.0)
    assert rec["kept"]
    fp32, int8 = Classifier.load(run.onnx("e2e")), Classifier.load(tmp_path / "m.int8.onnx")
    assert int8.meta["precision"] == "int8" and int8.calibration == fp32.calibration and int8.labels == fp32.labels
    assert int8.probs(trained["waves"][:2]).shape == (2, len(fp32.labels))


def test_truncated_and_tampered_onnx_are_refused(trained, tmp_path):
    from phonemekit.deploy.export import export_run
    from phonemekit.deploy.runtime import Classifier

    run = trained["runs"][0]
    export_run(run, trained["waves"][:4], forms=("e2e",), int8=False)
    good = (run / "onnx" / f"{run.name}.e2e.onnx").read_bytes()
    (tmp_path / "trunc.onnx").write_bytes(good[: len(good) // 2])
    with pytest.raises(IntegrityError, match="truncated or corrupt"):
        Classifier.load(tmp_path / "trunc.onnx")
    import onnx

    m = onnx.load_from_string(good)
    init = m.graph.initializer[0]
    arr = onnx.numpy_helper.to_array(init).copy()
    arr.flat[0] += 1.0
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    onnx.save(m, str(tmp_path / "tampered.onnx"))
    with pytest.raises(IntegrityError, match="tampered"):
        Classifier.load(tmp_path / "tampered.onnx")


def test_runtime_never_imports_torch(trained):
    from phonemekit.deploy.export import export_run

    run = trained["runs"][1]
    export_run(run, trained["waves"][:4], forms=("e2e",), int8=False)
    wav = trained["manifest"].audio_path(trained["manifest"].rows[0])
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any torch import now fails
        "from phonemekit.deploy.runtime import Classifier\n"
        f"c = Classifier.load({str(run / 'onnx' / 'b-mlp.e2e.onnx')!r})\n"
        f"print(c.classify_file({str(wav)!r})[0][0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in trained["manifest"].labels


def test_batch_test_torch_and_onnx(trained, tmp_path):
    from phonemekit.deploy.batchtest import list_inputs, load_predictor, run_batch, write_predictions
    from phonemekit.deploy.export import export_run

    run = trained["runs"][0]
    export_run(run, trained["waves"][:4], forms=("e2e",), int8=False)
    root = trained["manifest"].root
    broken = root / "s1" / "aa" / "broken.wav"
    broken.write_bytes(b"RIFF0000WAVEjunk")
    results = {}
    try:  # the corpus is shared by the module's other tests: never leave the broken file behind
        for model in (run, run / "onnx" / "a-ctc.e2e.onnx"):
            labels, predict, kind = load_predictor(model)
            rows, summary = run_batch(labels, predict, list_inputs(root, labels))
            results[kind] = rows
            assert summary["failed"] == [{"path": str(broken), "reason": "corrupt"}]
            assert summary["labelled"] == summary["classified"] == len(trained["manifest"].rows)
            write_predictions(rows, summary, tmp_path / f"{kind}.csv")
            assert (tmp_path / f"{kind}.csv").read_text().count("\n") == len(rows) + 1
    finally:
        broken.unlink()
    assert [r["predicted"] for r in results["torch"]] == [r["predicted"] for r in results["onnx"]]


def test_ensemble_weights_never_see_test_data(trained, tmp_path):
    import shutil

    from phonemekit.evaluation.ensemble import _aligned, fit
    from phonemekit.runs import runs

    names = [r.name for r in runs(trained["runs"])]
    val = _aligned(runs(trained["runs"]), "val")
    val_lp, val_y = [v.scores for v in val], val[0].y
    a = fit("weighted", names, val_lp, val_y)
    b = fit("weighted", names, [v.copy() for v in val_lp], val_y.copy())
    assert np.allclose(a.weights, b.weights) and abs(sum(a.weights) - 1) < 1e-6
    # The fit takes validation arrays only; scrambling the test predictions
    # on disk (of a copy: the module's other tests read the originals) cannot change it.
    scrambled = tmp_path / trained["runs"][0].name
    shutil.copytree(trained["runs"][0], scrambled)
    z = dict(np.load(scrambled / "predictions.npz"))
    z["test_scores"] = np.random.default_rng(0).standard_normal(z["test_scores"].shape).astype(np.float32)
    np.savez(scrambled / "predictions.npz", **z)
    val2 = _aligned(runs([scrambled, *trained["runs"][1:]]), "val")
    c = fit("weighted", names, [v.scores for v in val2], val2[0].y)
    assert np.allclose(a.weights, c.weights)


def test_ensemble_methods_and_single_file_export(trained, tmp_path):
    from phonemekit.deploy.ensemble import export_ensemble
    from phonemekit.deploy.runtime import Classifier
    from phonemekit.evaluation.ensemble import fit_ensembles
    from phonemekit.runs import runs

    rec, chosen = fit_ensembles(runs(trained["runs"]))
    assert set(rec["methods"]) == {"mean", "weighted", "vote", "stacking"} and rec["chosen"] == chosen.method
    assert rec["methods"][rec["chosen"]]["val_top1"] == max(m["val_top1"] for m in rec["methods"].values())
    exported = export_ensemble(runs(trained["runs"]), chosen, tmp_path / "ensemble.e2e.onnx", trained["waves"][:4], rec["calibration"])
    assert exported["parity"]["top1_agreement"] == 1.0
    clf = Classifier.load(tmp_path / "ensemble.e2e.onnx")
    assert clf.probs(trained["waves"][:2]).shape == (2, 3)
    # The ensemble's own calibration (fitted on validation) travels in the file and decides its verdicts.
    assert clf.calibration is not None and clf.calibration.to_dict() == rec["calibration"] and 0 <= rec["verdict"]["far"] <= 1
    assert clf.verdict(trained["waves"][0], clf.labels[0])["calibrated"]


def test_every_ensemble_rule_composes_into_one_file_with_parity(trained, tmp_path):
    import onnx

    from phonemekit.deploy.ensemble import export_ensemble
    from phonemekit.deploy.onnx import graph_sha256
    from phonemekit.evaluation.ensemble import METHODS, _aligned, fit
    from phonemekit.runs import runs

    members = runs(trained["runs"])
    names = [r.name for r in members]
    val = [(v.scores, v.y) for v in _aligned(members, "val")]
    # A member file changed after export is exported again, never embedded.
    member = trained["runs"][0] / "onnx" / f"{trained['runs'][0].name}.e2e.onnx"
    export_ensemble(members, fit("mean", names, [v[0] for v in val], val[0][1]), tmp_path / "first.onnx", trained["waves"][:4])
    m = onnx.load(str(member))
    init = m.graph.initializer[0]
    arr = onnx.numpy_helper.to_array(init).copy()
    arr.flat[0] += 1.0
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    onnx.save(m, str(member))
    for method in METHODS:
        ens = fit(method, names, [v[0] for v in val], val[0][1])
        rec = export_ensemble(members, ens, tmp_path / f"{method}.onnx", trained["waves"][:4])
        assert rec["parity"]["top1_agreement"] == 1.0 and rec["parity"]["max_abs_diff"] < 1e-4, method
    m = onnx.load(str(member))
    assert graph_sha256(m) == {p.key: p.value for p in m.metadata_props}["graph_sha256"]


def test_compare_reports_significance_and_speed(trained):
    import functools

    from phonemekit.deploy.speed import measure_speed
    from phonemekit.evaluation.compare import compare_runs
    from phonemekit.evaluation.metrics import mcnemar_exact
    from phonemekit.runs import runs

    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(10, 0) < 0.01 and abs(mcnemar_exact(3, 3) - 1.0) < 1e-9
    cmp = compare_runs(runs(trained["runs"][:2]), speed_of=functools.partial(measure_speed, threads=1))
    assert set(cmp["models"]) == {"a-ctc", "b-mlp"} and "a-ctc vs b-mlp" in cmp["pairs"]
    assert cmp["best_model"] in cmp["models"] and cmp["faster_model"] in cmp["models"]
    for m in cmp["models"].values():
        assert m["head_ms"] > 0 and m["e2e_ms_per_s_audio"] > 0 and m["params"] > 0


@pytest.mark.slow
def test_benchmark_json_has_the_documented_keys(tmp_path):
    from phonemekit.deploy.benchmark import MATRIX_OPS, run_benchmark
    from phonemekit.deploy.benchtable import write_results

    # Tiny sizes here; the command measures the real ones.
    # One end-to-end family (a transformers encoder's export is covered by the export tests).
    res = run_benchmark(
        threads=1, n=10, frames=20, dim=32, classes=5, batch=4, encoders=("whisper=random:tiny",), heads=("ctc-thin", "conv-ctc", "conv-pool"), e2e_runs=2
    )
    md = write_results(res, tmp_path / "bench.json")
    flat = json.loads((tmp_path / "bench.json").read_text())["flat"]
    keys = ["head.torch.batch1_mean_ms", "head.onnx.batch1_mean_ms", "head.onnx.batch1_max_ms", "head.onnx.batch64_seq_per_s", "threads", "peak_rss_mb"] + [
        f"e2e.whisper.{k}.rtf" for k in ("torch_fp32", "onnx_fp32", "onnx_int8")
    ]
    for key in keys:
        assert key in flat and flat[key] > 0, key
    assert flat["e2e.whisper.inference_process.torch_imported"] is False
    assert flat["e2e.whisper.source"] == "whisper=random:tiny".split("=")[1] and flat["e2e.whisper.weights"].startswith("random")
    text = md.read_text()
    verdict_row = next(line for line in text.splitlines() if line.startswith("| ctc-thin |"))
    assert verdict_row.count("PASS") + verdict_row.count("FAIL") == 4  # one verdict per head target, and the 2x goal
    assert "onnx_network_only" not in res["heads"]["conv-pool"]  # a pooled read-out has no CTC scoring to separate
    for h in res["heads"].values():  # the profiler's shares cover the kernels and name the matrix work
        assert abs(sum(h["batch64_op_shares"].values()) - 1.0) < 1e-6 and any(op in MATRIX_OPS for op in h["batch64_op_shares"])
        assert h["batch64_network_gflops"] > 0 and h["batch64_matrix_gflops"] >= h["batch64_network_gflops"]
    assert "matrix kernels" in text
    # The roof is measured, and every graph is read against it.
    assert res["roof"]["fp32_gflops"] > 0 and res["roof"]["int8_gflops"] > 0
    e = res["e2e"]["whisper"]
    assert e["gflop_per_call"] > 0 and 0 < e["onnx_fp32"]["roof_fraction"] and 0 < e["onnx_int8"]["roof_fraction"]
    # Whisper's conv stem is counted apart: int8 leaves it in fp32, so the int8 floor charges it at the fp32 roof.
    r, conv = res["roof"], e["conv_gflop_per_call"]
    assert 0 < conv < e["gflop_per_call"]
    floor = (e["gflop_per_call"] - conv) / r["int8_gflops"] + conv / r["fp32_gflops"]
    assert abs(e["onnx_int8"]["rtf_at_roof"] - floor) < 1e-9 and abs(e["onnx_fp32"]["rtf_at_roof"] - e["gflop_per_call"] / r["fp32_gflops"]) < 1e-9
    assert "Against the roof" in text and "The roof, measured here" in text
