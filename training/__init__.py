"""Training stages for sa3. Each stage module registers its entry point in TRAINERS.

A trainer entry point is ``run(config_path: str | None, out_dir: str, resume: bool) -> None``.
"""

from sa3core.registry import Registry

TRAINERS: Registry = Registry("training stage")

# Stage modules, imported lazily by `sa3 train` so one broken stage never hides the others.
STAGE_MODULES = {
    "autoencoder": "training.autoencoder",
    "flow": "training.flow",
    "distill": "training.distill",
    "adversarial": "training.adversarial",
    "lora": "training.lora",
}
