"""Search a catalogue with a trained method: build a persisted faiss index (``build``, ``store``, ``index``), encode
queries with the method's own query encoder (``query``) and answer them (``searcher.Searcher``, used by
``fashion-bench search`` and ``serve``). Importing this package imports nothing heavy; see docs/search.md."""
