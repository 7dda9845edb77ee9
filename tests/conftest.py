import os

import torch

# CI has 2 cores; keep runs reproducible and avoid oversubscribing them.
torch.set_num_threads(min(2, torch.get_num_threads()))

# Without a GPU the fused Triton kernels run on CPU tensors in Triton's interpreter, which
# must be chosen before any kernel is defined (tests/test_triton_displacement.py).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
