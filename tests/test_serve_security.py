"""The server as an attacker and a careless user would try it, on loopback:
the token on every route, foreign origins and host names, cross-site
recording, names in logs, labels that traverse paths, recordings that
overwrite each other, truncated audio and streams that hold slots."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import socket
import threading
import time

import httpx
import onnx
import pytest
from websockets.exceptions import ConnectionClosed

from .test_serve import Server, pcm16, wav_bytes, websockets_sync
from .test_web import DIST


def _server(served_model, **cfg) -> Server:
    from phonemekit.serve.app import ServeConfig, create_app

    return Server(create_app(served_model["model"], ServeConfig(**cfg)))


def _recording(clip: bytes, speaker: str = "Ada Example", label: str = "aa", consent: bool = True) -> str:
    return json.dumps({"speaker": speaker, "label": label, "consent": consent, "audio": base64.b64encode(clip).decode()})


JSON = {"content-type": "application/json"}


def _files(root) -> list:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_the_token_covers_every_route_but_health_and_the_page_shell(served_model, tmp_path):
    collect = tmp_path / "collect"
    clip = wav_bytes(served_model["clips"][0])
    with _server(served_model, token="T0k3n", web_dir=DIST, collect_dir=collect) as s:
        guarded = [
            ("GET", "/model.onnx"),
            ("GET", "/api/page"),
            ("GET", "/model"),
            ("GET", "/presets/balanced.json"),
            ("GET", "/silero_vad.onnx"),
            ("GET", "/docs"),
            ("GET", "/openapi.json"),
            ("POST", "/classify"),
        ]
        for method, path in guarded:
            r = httpx.request(method, s.url + path, content=clip if method == "POST" else None)
            assert r.status_code == 401 and r.json()["error"] == "unauthorised", (path, r.status_code)
        r = httpx.post(f"{s.url}/api/recordings", content=_recording(clip), headers=JSON)
        assert r.status_code == 401 and not collect.exists()
        assert httpx.get(f"{s.url}/health").status_code == 200
        for path in ("/", "/page.js", "/phonemekit.js", "/page.css"):  # the shell: public code, no model or data
            assert httpx.get(s.url + path).status_code == 200, path
        auth = {"authorization": "Bearer T0k3n"}
        assert httpx.get(f"{s.url}/model.onnx", headers=auth).content == served_model["model"].read_bytes()
        assert httpx.get(f"{s.url}/api/page", headers=auth).json()["collect"] is True
        r = httpx.post(f"{s.url}/api/recordings", content=_recording(clip), headers=JSON | auth)
        assert r.status_code == 200 and (collect / r.json()["path"]).is_file()


def test_websocket_upgrades_from_foreign_origins_are_refused(served_model):
    with _server(served_model, cors_origins=("http://game.example",)) as s:
        with pytest.raises(Exception, match="403"):
            with s.ws("?sample_rate=16000", origin="http://evil.example") as ws:
                ws.recv()
        for origin in ("http://game.example", s.url, None):  # allowed, the server's own, and a client that is not a browser
            with s.ws("?sample_rate=16000", origin=origin) as ws:
                ws.send(json.dumps({"type": "end"}))
                assert json.loads(ws.recv())["type"] == "end"
        # Plain HTTP from a foreign origin is refused too (a form post or no-cors fetch cannot be read, but it must not act).
        assert httpx.get(f"{s.url}/model", headers={"Origin": "http://evil.example"}).status_code == 403


def test_collection_refuses_cross_site_requests(served_model, tmp_path):
    collect = tmp_path / "collect"
    clip = wav_bytes(served_model["clips"][0])
    with _server(served_model, web_dir=DIST, collect_dir=collect) as s:
        rec = f"{s.url}/api/recordings"
        # What a page elsewhere can send without a preflight: text/plain (or a form), with its Origin and Sec-Fetch-Site.
        cross = {"origin": "http://evil.example", "sec-fetch-site": "cross-site"}
        assert httpx.post(rec, content=_recording(clip), headers={"content-type": "text/plain"} | cross).status_code == 403
        assert httpx.post(rec, content=_recording(clip), headers=JSON | cross).status_code == 403
        # A simple content type is refused even without an Origin header, and so are fields in the URL.
        assert httpx.post(rec, content=_recording(clip), headers={"content-type": "text/plain"}).status_code == 415
        assert httpx.post(f"{rec}?speaker=a&label=aa&consent=true", content=clip, headers={"content-type": "audio/wav"}).status_code == 400
        assert not collect.exists()
        same = httpx.post(rec, content=_recording(clip), headers=JSON | {"origin": s.url, "sec-fetch-site": "same-origin"})
        assert same.status_code == 200 and len(_files(collect)) == 1
        for body, status in (
            (_recording(clip, consent=False), 403),
            (_recording(clip, label="zz"), 400),
            ("[1]", 400),
            ("{", 400),
            (json.dumps({"speaker": "a", "label": "aa", "consent": True, "audio": "%%%"}), 400),
            (_recording(b"RIFF....", label="aa"), 422),
        ):
            assert httpx.post(rec, content=body, headers=JSON).status_code == status, body[:60]
        assert len(_files(collect)) == 1


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_a_childs_name_reaches_no_log_line(served_model, tmp_path):
    from phonemekit.serve.app import ServeConfig, create_app

    collect = tmp_path / "collect"
    clip = wav_bytes(served_model["clips"][0])
    records = _Records()
    loggers = [logging.getLogger(n) for n in ("uvicorn.access", "uvicorn.error", "phonemekit")]
    app = create_app(served_model["model"], ServeConfig(web_dir=DIST, collect_dir=collect))
    with Server(app, log_level="info") as s:  # uvicorn's access log on, as `phonemekit serve` runs it
        for logger in loggers:
            logger.addHandler(records)
        try:
            old = httpx.post(f"{s.url}/api/recordings?speaker=Emily+Johnson&label=aa&consent=true", content=clip, headers={"content-type": "audio/wav"})
            new = httpx.post(f"{s.url}/api/recordings", content=_recording(clip, speaker="Emily Johnson"), headers=JSON)
            with s.ws("?sample_rate=16000&note=Emily+Johnson") as ws:
                ws.send(json.dumps({"type": "end"}))
                ws.recv()
            time.sleep(0.2)
        finally:
            for logger in loggers:
                logger.removeHandler(records)
    assert old.status_code == 400 and new.status_code == 200
    assert any("/api/recordings" in line for line in records.lines), records.lines  # the access log did run
    leaked = [line for line in records.lines if "Emily" in line or "Johnson" in line]
    assert not leaked, leaked
    assert not [p for p in _files(collect) if "Emily" in str(p)] and new.json()["path"].startswith("spk-")


def _with_labels(src, dst, labels: list[str]) -> None:
    """A copy of an exported model whose metadata names other labels, re-signed so that only the labels are wrong."""
    from phonemekit.deploy import onnx as ox

    proto = onnx.load(src)
    meta = ox.metadata_of(proto)
    meta["labels"] = json.dumps(labels)
    ox.set_metadata(proto, meta)
    onnx.save(proto, dst)


@pytest.mark.parametrize("bad", ["../../../escaped", "<img src=x onerror=alert(1)>", "a/b", "", "x" * 33, "-rf", "a b"])
def test_a_model_whose_label_is_not_a_sounds_name_is_refused(served_model, tmp_path, bad):
    from phonemekit.deploy.runtime import Classifier
    from phonemekit.errors import IntegrityError

    labels = Classifier.load(served_model["model"]).labels
    _with_labels(served_model["model"], tmp_path / "evil.onnx", [bad, *labels[1:]])
    with pytest.raises(IntegrityError, match="not a sound's name"):
        Classifier.load(tmp_path / "evil.onnx")
    _with_labels(served_model["model"], tmp_path / "ipa.onnx", ["ʃ", "t͡ʃ", "aː"])  # IPA stays a label
    assert Classifier.load(tmp_path / "ipa.onnx").labels == ["ʃ", "t͡ʃ", "aː"]


def test_recordings_stay_inside_the_collection_folder(served_model, tmp_path):
    from phonemekit.deploy.runtime import Classifier
    from phonemekit.serve.app import ServeConfig, create_app

    collect = tmp_path / "a" / "b" / "collect"
    clf = Classifier.load(served_model["model"])
    clf.labels = ["../../../escaped", *clf.labels[1:]]  # as if a model had slipped past the label check
    with Server(create_app(served_model["model"], ServeConfig(web_dir=DIST, collect_dir=collect), classifier=clf)) as s:
        r = httpx.post(f"{s.url}/api/recordings", content=_recording(wav_bytes(served_model["clips"][0]), label="../../../escaped"), headers=JSON)
    assert r.status_code == 400 and r.json()["error"] == "bad_label"
    assert not _files(tmp_path)


def test_recorded_streams_never_overwrite_each_other(served_model, tmp_path):
    record = tmp_path / "record"
    frame = pcm16(served_model["clips"][0][:1600])
    with _server(served_model, record_dir=record) as s:
        for _ in range(100):
            with s.ws("?sample_rate=16000") as ws:
                ws.send(frame)
                ws.send(json.dumps({"type": "end"}))
                for _ in ws:
                    pass
        time.sleep(0.2)
        for _ in range(3):  # the same clip posted again: kept again, under a new name
            assert httpx.post(f"{s.url}/classify", content=wav_bytes(served_model["clips"][0])).status_code == 200
    assert len(list(record.glob("stream-*.wav"))) == 100 and len(list(record.glob("clip-*.wav"))) == 3


def _truncated(clip: bytes) -> dict[str, bytes]:
    declared_4gb = bytearray(clip)
    pos = clip.index(b"data")
    declared_4gb[pos + 4 : pos + 8] = (0xFFFFFFF0).to_bytes(4, "little")
    return {"third": clip[: 44 + (len(clip) - 44) // 3], "4gb": bytes(declared_4gb)}


def test_truncated_wavs_are_refused_everywhere(served_model, tmp_path):
    from phonemekit.data.manifest import prepare
    from phonemekit.deploy.batchtest import list_inputs, load_predictor, run_batch

    clip = wav_bytes(served_model["clips"][0])
    with _server(served_model) as s:
        for name, body in _truncated(clip).items():
            r = httpx.post(f"{s.url}/classify", content=body)
            assert r.status_code == 422 and r.json()["error"] == "truncated", (name, r.text)
        assert httpx.post(f"{s.url}/classify", content=clip).json()["warnings"] == []
    rec = tmp_path / "rec"
    for i, spk in enumerate(("s1", "s2")):
        own = wav_bytes(served_model["clips"][i])
        (rec / spk / "aa").mkdir(parents=True)
        (rec / spk / "aa" / "whole.wav").write_bytes(own)
        for name, body in _truncated(own).items():
            (rec / spk / "aa" / f"{name}.wav").write_bytes(body)
    summary = prepare(rec, tmp_path / "data")
    assert summary["reasons"] == {"truncated": 4} and len((tmp_path / "data" / "manifest.jsonl").read_text().splitlines()) == 2
    labels, predict, _ = load_predictor(served_model["model"])
    rows, result = run_batch(labels, predict, list_inputs(rec, labels))
    assert len(rows) == 2 and sorted(f["reason"] for f in result["failed"]) == ["truncated"] * 4


def test_trickling_streams_are_closed_so_real_clients_are_served(served_model):
    cfg = dict(max_streams=2, idle_timeout_s=2.0, starve_grace_s=2.0, min_audio_rate=0.5)
    with _server(served_model, **cfg) as s:
        closed: list[str] = []

        def trickle() -> None:  # one sample every 1.5 s: never idle, never speaking
            events = []
            with s.ws("?sample_rate=16000") as ws:
                try:
                    for _ in range(8):
                        ws.send(b"\x00\x01")
                        with contextlib.suppress(TimeoutError):
                            events.append(json.loads(ws.recv(timeout=1.5)))
                except ConnectionClosed:  # closed by the server
                    pass
            closed.append(next((e["error"] for e in events if e["type"] == "error"), "open"))

        threads = [threading.Thread(target=trickle) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        with s.ws("?sample_rate=16000") as ws:  # every slot is held for now
            assert json.loads(ws.recv())["error"] == "busy"
        time.sleep(3.5)
        with s.ws("?sample_rate=16000") as ws:  # the tricklers are gone: a real client is served
            ws.send(pcm16(served_model["clips"][0]))
            ws.send(json.dumps({"type": "end"}))
            events = [json.loads(m) for m in ws]
        for t in threads:
            t.join(15)
    assert events[-1]["type"] == "end" and not [e for e in events if e["type"] == "error"], events
    assert closed == ["starved", "starved"]


def test_a_streams_wall_clock_time_is_bounded(served_model):
    events = []
    with _server(served_model, max_stream_wall_s=1.5, idle_timeout_s=5.0) as s:
        with s.ws("?sample_rate=16000") as ws:
            t0 = time.monotonic()
            frame = pcm16(served_model["clips"][0][:1600])  # 0.1 s of audio every 0.1 s: a real-time client
            try:
                while time.monotonic() - t0 < 5:
                    ws.send(frame)
                    with contextlib.suppress(TimeoutError):
                        events.append(json.loads(ws.recv(timeout=0.1)))
            except ConnectionClosed:
                pass
            took = time.monotonic() - t0
    assert took < 3.5 and any(e.get("error") == "starved" for e in events), events


def test_only_loopback_host_names_are_answered(served_model):
    with _server(served_model, web_dir=DIST) as s:
        for host in ("evil.example", "rebind.attacker.test:8000", "127.0.0.1.nip.io"):
            r = httpx.get(f"{s.url}/model", headers={"host": host})
            assert r.status_code == 421 and r.json()["error"] == "unknown_host", host
            assert httpx.get(f"{s.url}/health", headers={"host": host}).status_code == 421
        sock = socket.create_connection(("127.0.0.1", s.port))
        with pytest.raises(Exception, match="421"):
            with websockets_sync.connect("ws://evil.example/stream", sock=sock) as ws:
                ws.recv()
        for host in (f"localhost:{s.port}", f"127.0.0.1:{s.port}", f"[::1]:{s.port}", "LOCALHOST"):
            assert httpx.get(f"{s.url}/model", headers={"host": host}).status_code == 200, host
    with _server(served_model, allowed_hosts=("localhost", "127.0.0.1", "::1", "game.local")) as s:
        assert httpx.get(f"{s.url}/model", headers={"host": "game.local:8000"}).status_code == 200
        assert httpx.get(f"{s.url}/model", headers={"host": "evil.example"}).status_code == 421
