import torch

# CI has 2 cores; keep runs reproducible and avoid oversubscribing them.
torch.set_num_threads(min(2, torch.get_num_threads()))
