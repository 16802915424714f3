"""``data.device_resident``: a split's faces (uint8), landmarks and features held on the training device and
batched there by index, with no loader workers and no copy to the device per step."""

from __future__ import annotations

import math
from typing import Iterator, Optional

import numpy as np
import psutil
import torch
from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

from antimask.errors import AntimaskError
from antimask.faces.images import to_chw

_CHUNK = 256  # rows read from the memory map and copied to the device at a time (bounds the host copy)


class DeviceMemoryError(AntimaskError, MemoryError):
    """A split whose faces do not fit the share of the device's memory that data.device_memory_fraction allows."""


def memory_budget(device: torch.device, fraction: float) -> tuple[int, str]:
    """(bytes, what they are a share of): ``fraction`` of a CUDA device's total memory, or elsewhere of the RAM
    available now (psutil), where the faces then live."""
    if device.type == "cuda":
        total = torch.cuda.mem_get_info(device)[1]
        return int(fraction * total), f"{fraction:g} of the {_mib(total)} of {torch.cuda.get_device_name(device)}"
    available = psutil.virtual_memory().available
    return int(fraction * available), f"{fraction:g} of the {_mib(available)} of RAM available"


def _mib(n: int) -> str:
    return f"{n / 2 ** 20:,.1f} MiB"


def shard_positions(count: int, rank: int, world: int) -> np.ndarray:
    """The dataset positions rank ``rank`` of ``world`` holds: DistributedSampler's share without shuffling
    (every world-th position, the first ones repeated so every rank has as many); all of them for one rank."""
    total = math.ceil(count / world) * world
    return np.arange(rank, total, world) % count


def resident_bytes(count: int, size: int, feature_dim: int) -> int:
    """Device bytes of ``count`` faces at ``size`` px: uint8 pixels, float32 landmarks and features, int64 ids."""
    return count * (3 * size * size + 68 * 2 * 4 + feature_dim * 4 + 2 * 8)


class ResidentBatches:
    """A split's batches indexed on the device: an iterable Lightning takes in place of a DataLoader.

    ``dataset`` is a ``FaceDataset`` without per-face numpy work (no photometric, no masks); the batches hold
    what its loader's batches hold (``face`` uint8 (B, 3, S, S), ``landmarks``, ``identity``, ``row``, ``features``),
    in the order a ``DataLoader(dataset, batch_size, shuffle, num_workers=0)`` gives for the same torch seed:
    each pass draws the DataLoader's worker seed, then RandomSampler's permutation, from torch's generator.
    Under DDP ``positions`` (``shard_positions``) are this rank's: fixed for the run, reshuffled each epoch.
    """

    def __init__(self, dataset, positions: np.ndarray, batch_size: int, shuffle: bool, device: torch.device):
        rows = np.asarray(dataset.rows)[positions]
        size = dataset.size
        faces = torch.empty((len(rows), 3, size, size), dtype=torch.uint8, device=device)
        for start in range(0, len(rows), _CHUNK):
            faces[start:start + _CHUNK] = to_chw(dataset.images[rows[start:start + _CHUNK]]).to(device)
        self.tensors = {
            "face": faces,
            "landmarks": torch.from_numpy(dataset.landmarks[rows] / size).to(device),
            "identity": torch.from_numpy(np.asarray(dataset.identities, np.int64)[rows]).to(device),
            "row": torch.from_numpy(rows.astype(np.int64)).to(device),
        }
        if dataset.features is not None:
            self.tensors["features"] = torch.from_numpy(np.asarray(dataset.features[rows], np.float32)).to(device)
        self.batch_size, self.shuffle, self.device = int(batch_size), bool(shuffle), device

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def __len__(self) -> int:
        return math.ceil(len(self.tensors["row"]) / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        # Drawn at the first batch, not at iter(): Lightning calls iter() once more on an iterable that is not a
        # DataLoader, only to check it can
        torch.empty((), dtype=torch.int64).random_()  # the worker seed a DataLoader draws before its sampler's
        count = len(self.tensors["row"])
        order = RandomSampler(range(count)) if self.shuffle else SequentialSampler(range(count))
        for indices in BatchSampler(order, self.batch_size, drop_last=False):
            index = torch.as_tensor(indices, device=self.device)
            yield {key: value[index] for key, value in self.tensors.items()}


def check_fits(needed: int, held: int, budget: int, budget_of: str, what: str, store: str,
               device: Optional[torch.device] = None) -> None:
    """DeviceMemoryError naming the store, the bytes needed and the budget when ``held + needed`` exceed it."""
    if held + needed <= budget:
        return
    also = f" on top of the {_mib(held)} held for the other splits" if held else ""
    raise DeviceMemoryError(
        f"{store}: data.device_resident needs {_mib(needed)} ({needed:,} bytes) on {device or 'the device'} for "
        f"{what}{also}, more than its budget of {_mib(budget)} ({budget:,} bytes: data.device_memory_fraction="
        f"{budget_of}); raise data.device_memory_fraction, lower data.image_size, or set data.device_resident=false "
        f"to read batches through the DataLoader")
