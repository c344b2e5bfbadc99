"""The benchmark's results as a flat table and as markdown with a verdict per target."""

from __future__ import annotations

from pathlib import Path

from phonemekit.deploy.benchmark import MATRIX_OPS, TARGETS
from phonemekit.fileio import write_json, write_text


def flatten(res: dict) -> dict:
    """Dotted keys for the documented names: head.onnx.batch1_mean_ms, e2e.wavlm.onnx_int8.rtf, ..."""
    flat: dict = {}

    def walk(prefix: str, obj) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = obj

    walk("", res)
    return flat


def markdown(res: dict) -> str:
    ok = lambda b: "PASS" if b else "FAIL"  # noqa: E731
    lines = [
        f"Benchmark on {res['cpu']}, {res['threads']} threads, torch {res['torch']}, onnxruntime {res['onnxruntime']}. "
        f"Head input {tuple(res['input'])}, {res['classes']} classes; warm-up excluded.",
        "",
        "Classification = network + exact CTC class scoring (what a game pays); network only = frame posteriors. "
        "`conv-pool` reads out by pooling (class logits): it has no CTC scoring to pay. "
        "2x goal: mean < 0.5 ms, max < 1 ms and > 4000 seq/s together.",
        "",
        "| head | params | GFLOP/call | torch mean ms | ONNX mean / p99 / max ms | ONNX batch-64 seq/s | network only: ONNX mean / max ms | network only: batch-64 seq/s | mean < 1 ms | max < 2 ms | > 2000 seq/s | 2x goal |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, h in res["heads"].items():
        o, v = h["onnx"], res["verdicts"][name]
        net = h.get("onnx_network_only")
        net_s = "-" if net is None else f"{net['batch1_mean_ms']:.2f} / {net['batch1_max_ms']:.2f}"
        net_b = "-" if net is None else f"{net['batch64_seq_per_s']:.0f}"
        lines.append(
            f"| {name} | {h['params'] / 1e3:.0f}k | {h['gflop_per_call']:.3f} | {h['torch']['batch1_mean_ms']:.2f} | "
            f"{o['batch1_mean_ms']:.2f} / {o['batch1_p99_ms']:.2f} / {o['batch1_max_ms']:.2f} | {o['batch64_seq_per_s']:.0f} | {net_s} | {net_b} | "
            f"{ok(v['mean < 1 ms'])} | {ok(v['max < 2 ms'])} | {ok(v['batch-64 > 2000 seq/s'])} | {ok(v['2x goal'])} |"
        )
    roof = res.get("roof")
    if roof:
        lines += [
            "",
            f"The roof, measured here on {roof['threads']} threads: one {roof['size']}x{roof['size']} fp32 MatMul "
            f"{roof['fp32_gflops']:.0f} GFLOP/s, one int8 MatMulInteger {roof['int8_gflops']:.0f} GOP/s (ONNX Runtime, best of 20, "
            "the higher of a measurement before and one after the graphs).",
        ]
    lines += [
        "",
        "Where the network's batch-64 time goes (ONNX Runtime profiler): achieved GFLOP/s of the whole network, of its "
        f"matrix kernels ({', '.join(MATRIX_OPS)}) alone and that as a share of the fp32 roof, and the largest shares of kernel time:",
        "",
        "| head | network GFLOP/s | matrix kernels GFLOP/s | of roof | kernel time by op |",
        "|---|---|---|---|---|",
    ]
    for name, h in res["heads"].items():
        mx, fr = h.get("batch64_matrix_gflops"), h.get("matrix_roof_fraction")
        shares = ", ".join(f"{op} {v:.0%}" for op, v in list(h["batch64_op_shares"].items())[:5])
        lines.append(f"| {name} | {h['batch64_network_gflops']:.0f} | {'-' if mx is None else f'{mx:.0f}'} | {'-' if fr is None else f'{fr:.0%}'} | {shares} |")
    if res["e2e"]:
        lines += [
            "",
            "End to end, 1 s of audio, thin CTC head (random weights where marked: speed does not depend on weights):",
            "",
            "| encoder | source | weights | torch fp32 RTF | ONNX fp32 RTF (x torch) | ONNX int8 RTF (x torch) | int8 max abs diff | inference process peak RSS (int8 / fp32) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for fam, e in res["e2e"].items():
            lines.append(
                f"| {fam} | `{e['source']}` | {e['weights'].split(' ')[0]} | {e['torch_fp32']['rtf']:.3f} | {e['onnx_fp32']['rtf']:.3f} ({e['onnx_fp32']['speedup_vs_torch_fp32']:.2f}x) | "
                f"{e['onnx_int8']['rtf']:.3f} ({e['onnx_int8']['speedup_vs_torch_fp32']:.2f}x) | {e['onnx_int8']['max_abs_diff_vs_fp32']:.2e} | "
                f"{e['inference_process'].get('peak_rss_mb', float('nan')):.0f} / {e['inference_process_fp32'].get('peak_rss_mb', float('nan')):.0f} MB |"
            )
        if roof and all("roof_fraction" in res["e2e"][f]["onnx_fp32"] for f in res["e2e"]):
            lines += [
                "",
                "Against the roof (GFLOP per call counted by torch's FlopCounterMode; int8 graphs against the int8 roof). "
                "RTF at the roof is the floor: every FLOP at its kernel's roof (int8: matrix products at the int8 roof, "
                "convolutions, which dynamic quantisation leaves in fp32, at the fp32 roof; and if every FLOP ran int8):",
                "",
                "| encoder | GFLOP per 1 s (convolutions) | ONNX fp32 GFLOP/s (of roof) | ONNX int8 GOP/s (of int8 roof) | "
                "RTF at the roof: fp32 / int8 / all int8 |",
                "|---|---|---|---|---|",
            ]
            for fam, e in res["e2e"].items():
                a, b = e["onnx_fp32"], e["onnx_int8"]
                lines.append(
                    f"| {fam} | {e['gflop_per_call']:.2f} ({e.get('conv_gflop_per_call', 0.0):.2f}) | {a['achieved_gflops']:.0f} ({a['roof_fraction']:.0%}) | "
                    f"{b['achieved_gflops']:.0f} ({b['roof_fraction']:.0%}) | {a['rtf_at_roof']:.3f} / {b['rtf_at_roof']:.3f} / "
                    f"{b['rtf_all_int8_at_roof']:.3f} |"
                )
    if res.get("peak_rss_mb") is not None:
        lines += ["", f"Peak RSS of the inference process: {res['peak_rss_mb']:.0f} MB ({ok(res['peak_rss_mb'] < TARGETS['peak_rss_mb'])} < 2 GB)."]
    return "\n".join(lines) + "\n"


def write_results(res: dict, json_path: Path) -> Path:
    write_json(json_path, {**res, "flat": flatten({k: v for k, v in res.items() if k != "verdicts"})})
    md = json_path.with_suffix(".md")
    write_text(md, markdown(res))
    return md
