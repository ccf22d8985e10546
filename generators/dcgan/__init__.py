"""Generator `dcgan`: a (class-conditional) DCGAN trained on the recipe's reference images, then sampled.

- `generator.py`: `DCGAN` (the entry point `synthloom.generators.dcgan:DCGAN`).
- `params.py`: `DCGANParams`, where every training default and bound is declared (once).
- `nets.py`: the generator and discriminator networks.
- `training.py`: the training loop (`TrainConfig`: DCGANParams' training fields plus what the reference
  decides; `Trainer`), mode-collapse check and sample grids.
- `calibration.py`: Platt calibration of the discriminator's logits into the `quality` column.
"""

from .generator import DCGAN
from .params import DCGANParams

__all__ = ["DCGAN", "DCGANParams"]
