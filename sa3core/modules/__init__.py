"""Layers shared by sa3's models (norms, local transformers; the DiT's attention and RoPE)."""
