"""Data loading: datasets, samplers (including the distributed one), DataLoader."""
from . import datasets
from .dataloader import DataLoader, default_collate
from .dataset import ConcatDataset, Dataset, Subset, TensorDataset, random_split
from .sampler import BatchSampler, DistributedSampler, RandomSampler, Sampler, SequentialSampler
