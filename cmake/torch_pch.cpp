// Translation unit that owns the precompiled <torch/torch.h> (see OutqTorch.cmake).
