"""The released Stable Audio 3 checkpoints (stabilityai/stable-audio-3-*, SAME-S, SAME-L), read
as published and run with the official numerics.

Modules: ``config`` (``model_config.json`` as typed dataclasses), ``checkpoint`` (reading a
released folder), ``dit`` (the released DiT), ``conditioners`` (the seconds conditioner and the
prompt's padding), ``same``/``same_config``/``modules`` (the SAME autoencoders), ``text`` (the
T5Gemma encoder).
"""
