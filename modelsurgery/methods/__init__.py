"""Training-speedup methods as small objects that any training loop can use.

In the manner of Composer's algorithms, each method checks its hyperparameters when it is built
(a bad one raises `MethodError`, naming the value and the fix) and changes training through the
hooks that `modelsurgery.train.Trainer` calls (`on_epoch_start`, `step_context`, `restore`; see
`base.Method`), over a functional core where there is one:

- `KernelRescaling` (de Gusmão et al. 2016): pre-train a shrunk copy, grow it (`grow_into`);
- `LowMode` (Nouri et al. 2019): a Bernoulli share of the iterations on downsampled images
  with pooled kernels (`modelsurgery.lowmode`);
- `ProgressiveResizing` (Wanger & Frohn 2018): small images first, the size rising to full;
- `CoarseToFine` (Liu et al. 2016): 8 → 16 → 32 px, the network grown at each stage (`grow_c2f`);
- `Compose`: several at once (e.g. kernel rescaling with low mode after the grow, or with
  `ProgressiveResizing(..., form="pretrain")` ramping the pre-train phase's input size);
- `carry_momentum`: SGD momentum carried across a grow through the weights' linear map
  (`modelsurgery.momentum`).

With the Trainer, pass the methods: `Trainer(kr.model, train, val, schedule=s, form=kr.form,
plan=kr.plan, methods=[kr])` calls every hook, `restore` included when it resumes.

Example: kernel rescaling in a plain PyTorch loop, no Trainer and no recipe.

    import itertools
    import torch
    import torch.nn.functional as F
    from modelsurgery.methods import KernelRescaling, carry_momentum
    from modelsurgery.nets import FashionResNet
    from modelsurgery.train import TensorLoader, load_fashion_mnist

    images, labels = load_fashion_mnist("train", source="fixture")
    loader = TensorLoader(images, labels, batch_size=64, max_batches=20)   # normalised 28 px
    kr = KernelRescaling(FashionResNet(width=4), target_size=28, switch_epoch=2)
    model = kr.model                                     # the pre-train net: 2x2 kernels, 19 px
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for epoch in range(3):
        if kr.should_grow(epoch):                        # 3x3 kernels, 28 px; BatchNorm re-measured
            small, model = model, kr.grow(model, calibration=[x for x, _ in itertools.islice(loader, 4)])
            opt = carry_momentum(small, opt, model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                                 kr.convert_state)        # new parameters; the momentum grown with them
        for x, y in loader:
            x = F.interpolate(x, size=kr.input_size, mode="bilinear", antialias=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
"""

from ..errors import MethodError
from ..momentum import carry_momentum, momentum_buffers
from .base import Compose, Method
from .coarse_to_fine import CoarseToFine, check_stages, grow_c2f
from .growth import GrowInStages, stage_map
from .kernel_rescaling import KernelRescaling, grow_into
from .low_mode import LowMode
from .progressive_resizing import ProgressiveResizing, ramp_size

__all__ = ["Method", "Compose", "MethodError", "KernelRescaling", "LowMode", "ProgressiveResizing", "CoarseToFine",
           "GrowInStages", "stage_map", "grow_into", "grow_c2f", "check_stages", "carry_momentum", "momentum_buffers",
           "ramp_size"]
