"""The browser package in a real browser: headless Chromium (Debian's
package) driven by Playwright against `serve --web` on loopback. Parity of
probabilities with the Python `Classifier`, the engine port against
`phonemekit live` on the same audio, the fake microphone playing a replay,
and guided recording keeping a valid clip and refusing a silent one."""

from __future__ import annotations

import difflib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from phonemekit.serve import browserbench

from .test_serve import Server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DIST = Path(__file__).resolve().parents[1] / "web" / "dist"
FLAGS = [*browserbench.FLAGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", "--autoplay-policy=no-user-gesture-required"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def web_server(served_model, tmp_path_factory):
    from phonemekit.serve.app import ServeConfig, create_app

    assert (DIST / "index.html").is_file(), "web/dist is not built: run `make web` (npm ci && npm run build)"
    collect = tmp_path_factory.mktemp("collect")
    with Server(create_app(served_model["model"], ServeConfig(web_dir=DIST, collect_dir=collect))) as s:
        s.collect = collect
        yield s


def _browser(p, audio: Path | None = None):
    args = FLAGS + ([f"--use-file-for-fake-audio-capture={audio}"] if audio else [])
    return p.chromium.launch(executable_path=CHROMIUM, args=args)


def _open(browser, url: str):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("document.getElementById('status').dataset.ready === 'true' || document.getElementById('status').dataset.error", timeout=60_000)
    assert page.evaluate("document.getElementById('status').dataset.error") is None, page.evaluate("document.getElementById('status').textContent")
    assert not errors, errors
    return page


def test_browser_probabilities_match_python(web_server, served_model):
    from playwright.sync_api import sync_playwright

    from phonemekit.deploy.runtime import Classifier

    clf = Classifier.load(served_model["model"])
    clips = served_model["clips"][:6]
    with sync_playwright() as p:
        browser = _browser(p)
        page = _open(browser, web_server.url + "/")
        diffs, ms = [], []
        for x in clips:
            res = page.evaluate(
                "async (w) => { const r = await window.phonemekit.classify(w); return {p: Array.from(r.probs), ms: r.ms, v: r.verdict}; }", x.tolist()
            )
            ref = clf.probs([x])[0]
            diffs.append(float(np.abs(np.array(res["p"]) - ref).max()))
            ms.append(res["ms"])
            assert res["v"]["expected"] == clf.labels[0] and res["v"] == clf.verdict_of(ref, clf.labels[0]) | {"probability": res["v"]["probability"]}
        load_ms = page.evaluate("window.phonemekitLoadMs")
        browser.close()
    assert max(diffs) < 1e-4, diffs
    print(f"browser parity: max |dp| {max(diffs):.2e}; load {load_ms:.0f} ms; per clip {np.median(ms):.1f} ms (median)")


def test_browser_engine_gives_the_events_of_live_on_the_same_audio(web_server, served_model):
    from playwright.sync_api import sync_playwright

    from phonemekit.deploy.runtime import Classifier
    from phonemekit.live.engine import LiveEngine, load_live_config, run_stream
    from phonemekit.live.sources import file_blocks

    ref = run_stream(LiveEngine(Classifier.load(served_model["model"]), load_live_config("balanced")), file_blocks(served_model["replay"]))
    wave = sf.read(served_model["replay"], dtype="float32")[0]
    with sync_playwright() as p:
        browser = _browser(p)
        page = _open(browser, web_server.url + "/")
        page.evaluate("window.phonemekit.expect(null)")
        page.evaluate(
            "async (w) => { const k = window.phonemekit; for (let i = 0; i < w.length; i += 512) k.feed(Float32Array.from(w.slice(i, i + 512)));"
            " await k.flush(); }",
            wave.tolist(),
        )
        got = page.evaluate("window.phonemekitEvents")
        browser.close()
    keep = lambda evs: [(e["type"], e.get("label"), e.get("segment_start"), e.get("segment_end")) for e in evs if e["type"] in ("onset", "final", "offset")]  # noqa: E731
    assert keep(got) == keep(ref) and sum(e["type"] == "final" for e in ref) >= 4


def _lcs_accuracy(labels: list, truth: list) -> float:
    m = difflib.SequenceMatcher(a=labels, b=truth, autojunk=False)
    return sum(b.size for b in m.get_matching_blocks()) / len(truth)


def test_fake_microphone_replay_is_heard_like_live(web_server, served_model, tmp_path):
    from playwright.sync_api import sync_playwright

    from phonemekit.deploy.runtime import Classifier
    from phonemekit.live.engine import LiveEngine, load_live_config, run_stream
    from phonemekit.live.sources import file_blocks

    truth = [t["label"] for t in served_model["truth"]]
    ref = [
        e["label"]
        for e in run_stream(LiveEngine(Classifier.load(served_model["model"]), load_live_config("balanced")), file_blocks(served_model["replay"]))
        if e["type"] == "final"
    ]
    seconds = sf.info(served_model["replay"]).duration
    with sync_playwright() as p:
        browser = _browser(p, served_model["replay"])
        page = _open(browser, web_server.url + "/")
        page.click("#start")
        page.wait_for_timeout(int(seconds * 1000) + 1500)  # the fake microphone plays the file (and loops)
        finals = [e for e in page.evaluate("window.phonemekitEvents") if e["type"] == "final"]
        lines = page.text_content("#events").splitlines()
        if os.environ.get("PHONEMEKIT_SCREENSHOT"):
            page.screenshot(path=os.environ["PHONEMEKIT_SCREENSHOT"], full_page=True)
        browser.close()
    heard = [e["label"] for e in finals][: len(truth) + 2]
    assert len(lines) >= len(finals) > 0 and all(json.loads(x)["type"] for x in lines)  # the #events element holds JSON lines
    print(f"fake microphone: {_lcs_accuracy(heard, truth):.3f} of the sounds heard in order, live on the file {_lcs_accuracy(ref, truth):.3f}")
    # One sound of slack: the fake device starts and loops on its own clock.
    assert _lcs_accuracy(heard, truth) >= _lcs_accuracy(ref, truth) - 1 / len(truth), (heard, ref, truth)


def test_collection_mode_saves_a_valid_clip_and_refuses_a_silent_one(web_server, served_model, tmp_path):
    from playwright.sync_api import sync_playwright

    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000 * 3, np.float32), 16000, subtype="PCM_16")
    results = {}
    with sync_playwright() as p:
        for name, audio in (("replay", served_model["replay"]), ("silent", silent)):
            browser = _browser(p, audio)
            page = _open(browser, web_server.url + "/")
            page.click("#mode-collect")
            page.check("#consent")
            page.fill("#speaker", "Ada Example")
            page.click("#record")
            page.wait_for_function("window.phonemekitEvents.some(e => e.type === 'recording')", timeout=30_000)
            results[name] = next(e for e in page.evaluate("window.phonemekitEvents") if e["type"] == "recording")
            browser.close()
    assert results["replay"]["ok"] and results["replay"]["path"].startswith("spk-"), results
    saved = web_server.collect / results["replay"]["path"]
    assert saved.is_file() and sf.info(saved).duration > 1.0 and "Ada" not in str(saved)
    assert not results["silent"]["ok"] and results["silent"]["status"] == 422 and results["silent"]["error"] == "silent", results


def test_page_endpoints_serve_the_files_live_uses_and_guard_recording(web_server, served_model):
    import httpx

    from phonemekit.serve.app import ServeConfig, create_app
    from phonemekit.serve.web import resolved_presets

    from .test_serve import wav_bytes
    from .test_serve_security import _recording

    url = web_server.url
    assert httpx.get(f"{url}/model.onnx").content == served_model["model"].read_bytes()
    assert httpx.get(f"{url}/presets/balanced.json").json() == resolved_presets()["balanced"]
    assert httpx.get(f"{url}/presets/jumpy.json").status_code == 404
    assert "phonemekit" in httpx.get(f"{url}/").text and httpx.get(f"{url}/api/page").json()["collect"] is True
    clip = wav_bytes(served_model["clips"][0])
    rec = f"{url}/api/recordings"
    post = lambda **kw: httpx.post(rec, content=_recording(clip, **kw), headers={"content-type": "application/json"})  # noqa: E731
    assert post(consent=False).json()["error"] == "no_consent"
    assert post(label="zz").status_code == 400
    assert post(speaker=" ").status_code == 400  # no speaker
    ok = post(speaker="a")
    assert ok.status_code == 200 and (web_server.collect / ok.json()["path"]).is_file()
    with Server(create_app(served_model["model"], ServeConfig(web_dir=DIST))) as s:  # no --collect: nothing is kept
        r = httpx.post(f"{s.url}/api/recordings", content=_recording(clip), headers={"content-type": "application/json"})
        assert r.status_code == 403 and r.json()["error"] == "collection_off"


def test_page_with_a_token_takes_it_from_the_fragment_and_sends_it(served_model, tmp_path):
    from playwright.sync_api import sync_playwright

    from phonemekit.serve.app import ServeConfig, create_app

    collect = tmp_path / "collect"
    with Server(create_app(served_model["model"], ServeConfig(token="T0k3n", web_dir=DIST, collect_dir=collect))) as s, sync_playwright() as p:
        browser = _browser(p, served_model["replay"])
        page = _open(browser, s.url + "/#token=T0k3n")
        assert "token" not in page.url  # out of the address bar (and of the history)
        page.click("#mode-collect")
        page.check("#consent")
        page.fill("#speaker", "Ada Example")
        page.click("#record")
        page.wait_for_function("window.phonemekitEvents.some(e => e.type === 'recording')", timeout=30_000)
        saved = next(e for e in page.evaluate("window.phonemekitEvents") if e["type"] == "recording")
        fresh = browser.new_page()  # another tab, no token: the page asks for it and gets nothing
        fresh.goto(s.url + "/")
        fresh.wait_for_function("document.getElementById('status').dataset.error", timeout=30_000)
        asks = fresh.is_visible("#token-form") and "token" in fresh.evaluate("document.getElementById('status').dataset.error")
        browser.close()
    assert saved["ok"] and (collect / saved["path"]).is_file(), saved
    assert asks


def _dist_with(tmp_path, files: dict) -> Path:
    dist = tmp_path / "dist"
    shutil.copytree(DIST, dist)
    for name, src in files.items():
        shutil.copy(src, dist / name)
    return dist


def test_a_model_with_markup_in_a_label_is_refused_and_runs_nothing(served_model, tmp_path):
    from playwright.sync_api import sync_playwright

    from phonemekit.serve.app import ServeConfig, create_app

    from .test_serve_security import _with_labels

    evil = tmp_path / "evil.onnx"
    _with_labels(served_model["model"], evil, ['<img src=x onerror="window.pwned=1">', "ee", "sh"])
    dist = _dist_with(tmp_path, {"evil.onnx": evil})
    wave = sf.read(served_model["replay"], dtype="float32")[0]
    with Server(create_app(served_model["model"], ServeConfig(web_dir=dist))) as s, sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page()
        page.goto(s.url + "/?model=evil.onnx")
        page.wait_for_function("document.getElementById('status').dataset.ready === 'true' || document.getElementById('status').dataset.error", timeout=60_000)
        error = page.evaluate("document.getElementById('status').dataset.error")
        if error is None:  # loaded: let it show its labels (the bars of each sound heard)
            page.evaluate(
                "async (w) => { const k = window.phonemekit; for (let i = 0; i < w.length; i += 512) k.feed(Float32Array.from(w.slice(i, i + 512)));"
                " await k.flush(); }",
                wave.tolist(),
            )
            page.wait_for_timeout(500)
        pwned = page.evaluate("window.pwned")
        browser.close()
    assert pwned is None
    assert error and "not a sound's name" in error, error


def test_the_page_refuses_a_model_from_another_origin(served_model, tmp_path, web_server):
    from playwright.sync_api import sync_playwright

    from phonemekit.serve.app import ServeConfig, create_app

    other = create_app(served_model["model"], ServeConfig(web_dir=DIST, cors_origins=(web_server.url,)))
    with Server(other) as o, sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page()
        page.goto(f"{web_server.url}/?model={o.url}/model.onnx")
        page.wait_for_function("document.getElementById('status').dataset.ready === 'true' || document.getElementById('status').dataset.error", timeout=60_000)
        error = page.evaluate("document.getElementById('status').dataset.error")
        browser.close()
    assert error and "another origin" in error, error


def test_reading_a_word_on_the_page_shows_a_verdict_for_each_sound(web_server, served_model, tmp_path):
    from playwright.sync_api import sync_playwright

    from .test_assess import _said

    said = tmp_path / "said.wav"
    sf.write(said, np.concatenate([_said("aa", "ee", "aa"), np.zeros(16000, np.float32)]), 16000, subtype="PCM_16")
    with sync_playwright() as p:
        browser = _browser(p, said)
        page = _open(browser, web_server.url + "/")
        page.click("#mode-word")
        assert page.is_visible("#word-practice") and not page.is_visible("#practise")
        page.fill("#read-word", "aa ee sh")
        page.check("#read-as-sounds")
        page.fill("#read-seconds", "4")
        page.click("#read")
        page.wait_for_function("window.phonemekitEvents.some(e => e.type === 'assess')", timeout=30_000)
        res = next(e for e in page.evaluate("window.phonemekitEvents") if e["type"] == "assess")
        items = page.eval_on_selector_all("#read-sounds li", "els => els.map(e => [e.className, e.textContent])")
        browser.close()
    assert res["ok"] and res["expected"] == ["aa", "ee", "sh"] and len(items) == 3, res
    assert [c for c, _ in items] == [s["verdict"] for s in res["sounds"]] and res["correct"] >= 1
    assert items[2][0] == "substituted" and items[2][1] == "sh: heard aa"  # the last sound said was aa, not sh


def test_a_profile_loaded_on_the_page_adapts_the_browser_as_python(web_server, served_model, tmp_path):
    from playwright.sync_api import sync_playwright

    from phonemekit.deploy.runtime import Classifier

    clf = Classifier.load(served_model["model"])
    clips = served_model["clips"][:6]
    # Wrong labels on purpose: the adapted answers move away from the model's own.
    profile = clf.enrol(clips, [clf.labels[(i + 1) % len(clf.labels)] for i in clf.probs(clips).argmax(1)], reg=0.01)
    ref = clf.with_profile(profile).probs(clips)
    assert np.abs(ref - clf.probs(clips)).max() > 0.1
    (tmp_path / "p.json").write_text(json.dumps(profile.to_dict()))
    (tmp_path / "foreign.json").write_text(json.dumps({**profile.to_dict(), "model": "0" * 64}))
    with sync_playwright() as p:
        browser = _browser(p)
        page = _open(browser, web_server.url + "/")
        classify = "async (w) => Array.from((await window.phonemekit.classify(w)).probs)"
        page.set_input_files("#profile", str(tmp_path / "p.json"))
        page.wait_for_function("window.phonemekitEvents.some(e => e.type === 'profile')", timeout=10_000)
        got = np.array([page.evaluate(classify, x.tolist()) for x in clips])
        shown = page.text_content("#profile-status")
        page.set_input_files("#profile", str(tmp_path / "foreign.json"))
        page.wait_for_function("window.phonemekitEvents.filter(e => e.type === 'profile').length === 2", timeout=10_000)
        refused = page.text_content("#profile-status")
        still = np.array(page.evaluate(classify, clips[0].tolist()))  # a refused profile leaves the last good one in place
        page.evaluate("window.phonemekit.setProfile(null)")
        plain = np.array(page.evaluate(classify, clips[0].tolist()))
        browser.close()
    assert np.abs(got - ref).max() < 1e-4 and "adapted to this child" in shown
    assert "another model" in refused and np.abs(still - ref[0]).max() < 1e-4
    assert np.abs(plain - clf.probs(clips[:1])[0]).max() < 1e-4
