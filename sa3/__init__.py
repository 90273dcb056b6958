"""sa3's applications, above the model library ``sa3core``: the command line (``sa3.cli``, the
``sa3`` console script and ``python -m sa3``), the offline renderer (``sa3.render``) and the
evaluation suite (``sa3.eval``). They import the library and the other applications (bridge,
export, training); the library imports none of them (tests/test_layers.py)."""
