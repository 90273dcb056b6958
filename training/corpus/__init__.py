"""The licensed training corpus: captioned music and sound effects built from registry packages.

``sa3 data build -o DIR`` (see :mod:`training.corpus.cli`) writes FLAC files, ``manifest.jsonl``
and ``licences.md``/``licences.json`` into DIR. Python callers use :func:`build_corpus` with a
:class:`CorpusConfig`; :func:`make_item` gives one item's audio and manifest fields in memory.
See docs/corpus.md for the manifest format and the licences.
"""

from .build import BuildReport, CorpusConfig, build_corpus, make_item, report_text, split_of

__all__ = ["BuildReport", "CorpusConfig", "build_corpus", "make_item", "report_text", "split_of"]
