"""``distgrad.nn.parallel.DistributedDataParallel`` (it lives in ``distgrad.distributed``)."""


def __getattr__(name):
    # Imported on first use: distributed builds on nn, so nn cannot import it eagerly.
    if name in ("DistributedDataParallel", "DDP"):
        from ...distributed import DistributedDataParallel

        return DistributedDataParallel
    raise AttributeError(f"module 'distgrad.nn.parallel' has no attribute '{name}'")
