"""Browser timings: model file size, load time and per-clip inference time
of exported models in headless Chromium (onnxruntime-web, WASM, one
thread), served by `serve --web` on loopback and driven by Playwright.
`phonemekit browser-bench MODEL...` prints them; it needs Debian's
chromium and the built page (`make web`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from phonemekit.errors import ConfigError

# What headless Chromium needs on a machine without a display, GPU or network.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        raise ConfigError("browser timings need Debian's chromium (apt-get install chromium)")
    return path


def browser_timings(model: Path, web_dir: Path, clip_seconds: float = 1.0, clips: int = 10) -> dict:
    """Load the model in the page, then classify `clips` clips of `clip_seconds` of audio one at a time."""
    from playwright.sync_api import sync_playwright

    from phonemekit.serve.app import ServeConfig, create_app
    from phonemekit.serve.loadtest import LoopbackServer

    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(int(clip_seconds * 16000))).astype(np.float32).tolist()
    with LoopbackServer(create_app(model, ServeConfig(web_dir=web_dir))) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=FLAGS)
        page = browser.new_page()
        page.goto(server.url + "/")
        page.wait_for_function("document.getElementById('status').dataset.ready === 'true' || document.getElementById('status').dataset.error", timeout=300_000)
        error = page.evaluate("document.getElementById('status').dataset.error")
        if error:
            raise RuntimeError(f"the page could not load {model.name}: {error}")
        load_ms = page.evaluate("window.phonemekitLoadMs")
        page.evaluate("async (w) => { await window.phonemekit.classify(w); }", wave)  # warm-up
        ms = [page.evaluate("async (w) => (await window.phonemekit.classify(w)).ms", wave) for _ in range(clips)]
        browser.close()
    return {
        "model": model.name,
        "bytes": model.stat().st_size,
        "load_ms": round(load_ms),
        "clip_seconds": clip_seconds,
        "infer_ms_median": round(float(np.median(ms)), 1),
        "infer_ms_max": round(float(np.max(ms)), 1),
        "rtf": round(float(np.median(ms)) / 1000 / clip_seconds, 4),
    }
