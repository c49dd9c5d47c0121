"""Algorithms on top of the process group (PyTorch's ``torch.distributed.algorithms``)."""
