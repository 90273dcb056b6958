"""``sa3 train lora``: LoRA adapters for the released Stable Audio 3 base models, trained on a folder of audio.

- :mod:`training.lora.data`: the folder, its captions, the pre-encoded latents and text (cached);
- :mod:`training.lora.adapters`: the eight official adapter types as trainable parametrizations;
- :mod:`training.lora.objective`: the official LoRA training objective, piece by piece;
- :mod:`training.lora.trainer`: the config, the model, the trainer (registered as ``lora``).
"""

from .trainer import LoraTrainConfig, LoraTrainer, run

__all__ = ["LoraTrainConfig", "LoraTrainer", "run"]
