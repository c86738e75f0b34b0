"""The mixed-modal tests run on one thread (tiny models: threads only add contention)."""

import torch

torch.set_num_threads(1)
