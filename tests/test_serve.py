"""The server, started on a free loopback port with a tiny exported model and
driven by real HTTP and WebSocket clients: parity with `Classifier`, stream
events equal to `live` on the same audio, every malformed case answered with
a 4xx and the server still up, auth, limits."""

from __future__ import annotations

import asyncio
import io
import json
import time

import httpx
import numpy as np
import pytest
import soundfile as sf

from phonemekit.serve.loadtest import LoopbackServer

websockets_sync = pytest.importorskip("websockets.sync.client")


class Server(LoopbackServer):
    """The server on loopback, with a WebSocket client for its stream."""

    def ws(self, query: str = "", **kw):
        return websockets_sync.connect(f"ws://127.0.0.1:{self.port}/stream{query}", **kw)


def _serve(served_model, **cfg):
    from phonemekit.serve.app import ServeConfig, create_app

    return Server(create_app(served_model["model"], ServeConfig(**cfg)))


def wav_bytes(x: np.ndarray, subtype: str = "PCM_16", sr: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, subtype=subtype, format="WAV")
    return buf.getvalue()


def pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


@pytest.fixture(scope="module")
def server(served_model):
    with _serve(served_model) as s:
        yield s


def test_health_model_and_openapi(server, served_model):
    from phonemekit.deploy.runtime import Classifier

    clf = Classifier.load(served_model["model"])
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    info = httpx.get(f"{server.url}/model").json()
    assert [x["label"] for x in info["labels"]] == clf.labels and info["sample_rate"] == 16000
    assert info["hashes"]["integrity_sha256"] == clf.meta["integrity_sha256"] and info["calibration"]["temperature"] > 0
    assert info["weights"] == "none" and info["versions"]["phonemekit"]
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert {"/health", "/model", "/classify"} <= set(paths)


def test_classify_matches_the_classifier_and_gives_calibrated_verdicts(server, served_model):
    from phonemekit.deploy.runtime import Classifier

    clf = Classifier.load(served_model["model"])
    for x in served_model["clips"][:5]:
        body = wav_bytes(x)
        q = np.round(x * 32767).clip(-32768, 32767) / 32768  # what the PCM16 file holds
        ref = clf.probs([sf.read(io.BytesIO(body), dtype="float32")[0]])[0]
        got = httpx.post(f"{server.url}/classify?top_k=3&expect={clf.labels[0]}", content=body).json()
        # Same probabilities for every label returned (the order of near-zero ones may differ in the last bits).
        assert got["top_k"][0]["label"] == clf.labels[int(np.argmax(ref))] and len(got["top_k"]) == 3
        for t in got["top_k"]:
            assert abs(t["probability"] - ref[clf.labels.index(t["label"])]) < 1e-5
        assert got["verdict"] == clf.verdict_of(ref, clf.labels[0]) and got["verdict"]["calibrated"]
        # Raw PCM16 with its sample rate gives the same answer.
        raw = httpx.post(f"{server.url}/classify?sample_rate=16000", content=pcm16(q.astype(np.float32))).json()
        assert raw["top_k"][0]["label"] == got["top_k"][0]["label"]
    # 48 kHz PCM is resampled, not refused.
    assert httpx.post(f"{server.url}/classify?sample_rate=48000", content=pcm16(np.repeat(served_model["clips"][0], 3))).status_code == 200


@pytest.mark.parametrize(
    "case", ["not_audio", "truncated", "nan", "empty", "odd_pcm", "bad_rate", "silent", "unknown_label", "bad_top_k", "too_long", "oversized"]
)
def test_malformed_requests_get_a_json_4xx_and_the_server_stays_up(server, served_model, case):
    x = served_model["clips"][0]
    good = wav_bytes(x)
    nan = x.copy()
    nan[10] = np.nan
    url = f"{server.url}/classify"
    req = {
        "not_audio": (url, b"GIF89a" + b"\0" * 100, 415),
        "truncated": (url, good[:40], 422),
        "nan": (url, wav_bytes(nan, "FLOAT"), 422),
        "empty": (url, b"", 422),
        "odd_pcm": (url + "?sample_rate=16000", b"\x01\x02\x03", 422),
        "bad_rate": (url + "?sample_rate=1000", pcm16(x), 422),
        "silent": (url, wav_bytes(np.zeros(8000, np.float32)), 422),
        "unknown_label": (url + "?expect=zz", good, 400),
        "bad_top_k": (url + "?top_k=abc", good, 400),
        "too_long": (url, wav_bytes(np.tile(x, 40)[: 16000 * 11]), 413),
        "oversized": (url, b"RIFF" + b"\0" * 6_000_000, 413),
    }[case]
    r = httpx.post(req[0], content=req[1])
    assert r.status_code == req[2], r.text
    assert set(r.json()) == {"error", "detail"} and r.json()["detail"]
    assert httpx.get(f"{server.url}/health").status_code == 200


def _stream_events(server, pcm: bytes, query: str = "?sample_rate=16000", block: int = 1024) -> list[dict]:
    events = []
    with server.ws(query) as ws:
        for i in range(0, len(pcm), block):
            ws.send(pcm[i : i + block])
        ws.send(json.dumps({"type": "end"}))
        for msg in ws:
            events.append(json.loads(msg))
    return events


def _comparable(events: list[dict]) -> list[dict]:
    drop = {"t_wall", "compute_ms", "top_k"}
    return [{k: v for k, v in e.items() if k not in drop} for e in events]


def test_stream_events_equal_live_on_the_same_audio(server, served_model):
    from phonemekit.deploy.runtime import Classifier
    from phonemekit.live.engine import LiveEngine, load_live_config, run_stream
    from phonemekit.live.sources import file_blocks

    wave = sf.read(served_model["replay"], dtype="int16")[0]
    ref = run_stream(LiveEngine(Classifier.load(served_model["model"]), load_live_config("balanced")), file_blocks(served_model["replay"]))
    got = _stream_events(server, wave.astype("<i2").tobytes())
    assert got[-1]["type"] == "end"
    assert _comparable(got[:-1]) == _comparable(ref) and sum(e["type"] == "final" for e in ref) >= 4
    finals = [e for e in got if e["type"] == "final"]
    for g, r in zip(finals, [e for e in ref if e["type"] == "final"]):
        assert [t[0] for t in g["top_k"]] == [t[0] for t in r["top_k"]]


def test_stream_expect_verdicts_and_garbage_frames(server, served_model):
    from phonemekit.deploy.runtime import Classifier

    labels = Classifier.load(served_model["model"]).labels
    wave = sf.read(served_model["replay"], dtype="int16")[0].astype("<i2").tobytes()
    with server.ws(f"?sample_rate=16000&expect={labels[0]}") as ws:
        ws.send(b"\x01\x02\x03")  # half a sample
        ws.send("{not json")
        ws.send(json.dumps({"expect": "zz"}))
        for i in range(0, len(wave), 2048):
            ws.send(wave[i : i + 2048])
        ws.send(json.dumps({"type": "end"}))
        events = [json.loads(m) for m in ws]
    errors = [e for e in events if e["type"] == "error"]
    assert len(errors) == 3 and all(e["error"] == "bad_frame" for e in errors)
    finals = [e for e in events if e["type"] == "final"]
    assert finals and all(e["verdict"]["expected"] == labels[0] and "accepted" in e["verdict"] for e in finals)


def test_bad_stream_parameters_get_an_error_event(server):
    for query in ("?sample_rate=abc", "?sample_rate=16000&preset=jumpy", "?expect=zz"):
        with server.ws(query) as ws:
            ev = json.loads(ws.recv())
            assert ev["type"] == "error" and ev["error"] == "bad_request", ev
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_auth_on_and_off(served_model):
    x = wav_bytes(served_model["clips"][0])
    with _serve(served_model, token="s3cret") as s:
        assert httpx.get(f"{s.url}/health").status_code == 200  # liveness stays open
        assert httpx.post(f"{s.url}/classify", content=x).status_code == 401
        assert httpx.post(f"{s.url}/classify", content=x, headers={"authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(f"{s.url}/model").status_code == 401
        assert httpx.post(f"{s.url}/classify", content=x, headers={"authorization": "Bearer s3cret"}).status_code == 200
        with pytest.raises(Exception, match="401"):
            with s.ws("?sample_rate=16000") as ws:
                ws.recv()
        with pytest.raises(Exception, match="401"):  # a token in the URL would reach logs: not accepted there
            with s.ws("?sample_rate=16000&token=s3cret") as ws:
                ws.recv()
        for kw in ({"additional_headers": {"Authorization": "Bearer s3cret"}}, {"subprotocols": ["phonemekit", "bearer.s3cret"]}):
            with s.ws("?sample_rate=16000", **kw) as ws:
                ws.send(json.dumps({"type": "end"}))
                assert json.loads(ws.recv())["type"] == "end"


def test_limits_streams_requests_and_idle(served_model):
    x = wav_bytes(served_model["clips"][0])
    with _serve(served_model, max_streams=1, max_requests=1, queue_timeout_s=0.2, idle_timeout_s=0.5) as s:
        with s.ws("?sample_rate=16000") as first:
            with s.ws("?sample_rate=16000") as second:  # over the cap: told to come back, not crashed
                ev = json.loads(second.recv())
                assert ev["error"] == "busy"
            first.send(pcm16(served_model["clips"][0]))
            # No frame for longer than the idle timeout: the server closes the stream.
            events = [json.loads(m) for m in first]
            assert all(e["type"] != "error" for e in events)
        # Every request slot taken: the next request waits, then gets 503 with Retry-After.
        state = s.server.config.app.state.phonemekit
        asyncio.run_coroutine_threadsafe(state.requests.acquire(), s.loop).result(5)
        try:
            r = httpx.post(f"{s.url}/classify", content=x)
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
        finally:
            s.loop.call_soon_threadsafe(state.requests.release)
        assert httpx.post(f"{s.url}/classify", content=x).status_code == 200


def test_watch_reloads_the_model_without_dropping_a_stream(served_model, tmp_path):
    import os
    import shutil

    from phonemekit.serve.app import ServeConfig, create_app

    live_model = tmp_path / "live.onnx"
    shutil.copy(served_model["model"], live_model)
    wave = sf.read(served_model["replay"], dtype="int16")[0].astype("<i2").tobytes()
    half = len(wave) // 2 // 1024 * 1024
    with Server(create_app(live_model, ServeConfig(watch_s=0.1))) as s:
        with s.ws("?sample_rate=16000") as ws:
            for i in range(0, half, 1024):
                ws.send(wave[i : i + 1024])
            (tmp_path / "half.onnx").write_bytes(live_model.read_bytes()[:1000])
            os.replace(tmp_path / "half.onnx", live_model)  # a broken file lands first: the old model keeps serving
            time.sleep(0.5)
            shutil.copy(served_model["model"], tmp_path / "new.onnx")
            os.replace(tmp_path / "new.onnx", live_model)
            deadline = time.time() + 10
            while httpx.get(f"{s.url}/health").json()["reloads"] < 1:
                assert time.time() < deadline, "model was not reloaded"
                time.sleep(0.1)
            for i in range(half, len(wave), 1024):
                ws.send(wave[i : i + 1024])
            ws.send(json.dumps({"type": "end"}))
            events = [json.loads(m) for m in ws]
    assert events[-1]["type"] == "end" and abs(events[-1]["t_audio"] - len(wave) / 2 / 16000) < 0.04  # every sample was processed
    assert not [e for e in events if e["type"] == "error"] and sum(e["type"] == "final" for e in events) >= 4


def test_cors_allows_only_the_named_origins(served_model):
    pre = {"Access-Control-Request-Method": "POST"}
    with _serve(served_model, cors_origins=("http://game.example",)) as s:
        ok = httpx.options(f"{s.url}/classify", headers={"Origin": "http://game.example", **pre})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://game.example"
        other = httpx.options(f"{s.url}/classify", headers={"Origin": "http://elsewhere.example", **pre})
        assert "access-control-allow-origin" not in other.headers
    with _serve(served_model) as s:  # no --cors: no browser origin is allowed
        assert "access-control-allow-origin" not in httpx.options(f"{s.url}/classify", headers={"Origin": "http://game.example", **pre}).headers


def test_a_word_expected_on_the_stream_is_judged_sound_by_sound(server):
    from .test_assess import _said

    wave = pcm16(_said("aa", "ee", "aa"))
    with server.ws("?sample_rate=16000") as ws:
        ws.send(json.dumps({"word": 7}))  # not text: refused, the stream goes on
        ws.send(json.dumps({"type": "word_end"}))  # no word expected yet
        ws.send(json.dumps({"phones": "aa ee sh"}))
        for i in range(0, len(wave), 3200):
            ws.send(wave[i : i + 3200])
        ws.send(json.dumps({"type": "word_end"}))
        ws.send(json.dumps({"type": "end"}))
        events = [json.loads(m) for m in ws]
    errors = [e for e in events if e["type"] == "error"]
    assert len(errors) == 2 and "one of the two" in errors[0]["detail"] and "no word expected" in errors[1]["detail"]
    words = [e for e in events if e["type"] == "word"]
    first, last = words[0], words[-1]
    assert first["expected"] == ["aa", "ee", "sh"] and [s["verdict"] for s in first["sounds"]] == ["missing"] * 3 and not first["final"]
    assert len(words) >= 4 and sum(w["final"] for w in words) == 1 and last["final"]  # one after each sound heard, then the last
    assert [s["heard"] for s in last["sounds"]] == ["aa", "ee", "aa"] and last["sounds"][2]["verdict"] == "substituted"
    assert events.index(last) < next(i for i, e in enumerate(events) if e["type"] == "end")
