"""phonemekit: recognise single speech sounds spoken by young children.

    import phonemekit
    phonemekit.prepare("recordings", "data")
    run = phonemekit.train("data", "runs/mine", model="whisper-mlp")
    phonemekit.export(run.path)
    clf = phonemekit.Classifier.load(run.onnx("e2e"))
    clf.classify(waveform)   # [(label, probability), ...]

The names resolve on first use, so `import phonemekit` stays light and a
game that only classifies never imports torch.
"""

__version__ = "0.1.0"

_API = {"prepare": "phonemekit.api", "train": "phonemekit.api", "load": "phonemekit.api", "export": "phonemekit.api",
        "assess_word": "phonemekit.api", "Classifier": "phonemekit.deploy.runtime"}  # fmt: skip

__all__ = ["Classifier", "assess_word", "export", "load", "prepare", "train", "__version__"]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'phonemekit' has no attribute {name!r}")
