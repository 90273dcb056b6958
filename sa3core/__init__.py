"""sa3core: the Stable Audio 3 style model library (autoencoder, DiT, samplers, pipeline)."""

__version__ = "0.1.0"
