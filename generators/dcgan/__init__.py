"""Generator `dcgan`: a (class-conditional) DCGAN trained on the recipe's reference images, then sampled.

- `generator.py`: `DCGAN` and `DCGANParams` (the entry point `synthloom.generators.dcgan:DCGAN`).
- `nets.py`: the generator and discriminator networks.
- `training.py`: the training loop (`TrainConfig`, `Trainer`), mode-collapse check and sample grids.
- `calibration.py`: Platt calibration of the discriminator's logits into the `quality` column.
"""

from .generator import DCGAN, DCGANParams

__all__ = ["DCGAN", "DCGANParams"]
