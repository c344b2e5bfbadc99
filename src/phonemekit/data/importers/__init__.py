"""Corpus importers, one registry (as lhotse keeps its recipes): each reads
a corpus in the format speech people keep it in and returns its utterances
(and phone segments where the corpus has times); `import_corpus` writes the
same prepared dataset `prepare` writes, plus `utterances.jsonl` for
alignment and sequence training.

    phonemekit import speechocean762 SRC --out DATA
"""

from phonemekit.data.importers import audiofolder, kaldi, lhotse, textgrid, timit  # noqa: F401  (each registers itself)
from phonemekit.data.importers.base import Imported, available_importers, import_corpus, register_importer

__all__ = ["Imported", "available_importers", "import_corpus", "register_importer"]
