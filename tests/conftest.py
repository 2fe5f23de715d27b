import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests run under pytest-xdist with one worker per core; more threads per worker only fight.
torch.set_num_threads(1)
