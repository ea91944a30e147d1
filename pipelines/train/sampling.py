"""The recipe's training batches: texts of similar length together, in an order drawn from the seed.

Each epoch: shuffle the texts, sort them by length inside mega-batches of ``mega`` batches, cut the
batches, shuffle the batches. Dynamic padding then pads little while the order stays random. All
epochs draw from one ``random.Random(seed)``, so epoch ``e``'s batches are replayed from the seed:
a run resumed at epoch ``e`` gets the batches the killed run would have had, and the default run
trains on the batches the recipe always had (the hand-written loop before ``transformers.Trainer``).

Under ``parts`` = processes x gradient-accumulation steps, each batch is cut into ``parts``
consecutive micro-batches: accelerate hands micro-batch ``i`` to rank ``i % processes``, so one
optimizer step takes exactly one batch, as in one process.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


def length_grouped_batches(lengths: list[int], batch_size: int, rng: random.Random, mega: int = 50) -> list[list[int]]:
    """One epoch's batches: shuffle, sort by length inside mega-batches of ``mega`` batches, shuffle the batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    for start in range(0, len(order), batch_size * mega):
        chunk = sorted(order[start : start + batch_size * mega], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


class LengthGroupedBatches(Sampler[list[int]]):
    """A batch sampler (the Trainer's ``set_epoch`` picks the epoch) of :func:`length_grouped_batches`.

    A last batch smaller than ``parts`` cannot be cut into ``parts`` micro-batches and is left out
    (at most ``parts - 1`` texts an epoch, only with several processes or accumulation steps). It has
    no ``batch_size`` attribute: accelerate would then take micro-batches of another size as incomplete.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, parts: int = 1, mega: int = 50):
        self.lengths, self.rows, self.seed, self.parts, self.mega = list(lengths), batch_size, seed, parts, mega
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps an epoch: one per batch."""
        full, tail = divmod(len(self.lengths), self.rows)
        return full + (tail >= self.parts)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """Epoch ``epoch``'s batches (0-based), the seed's draws replayed through the epochs before it."""
        rng = random.Random(self.seed)
        for _ in range(epoch):
            length_grouped_batches(self.lengths, self.rows, rng, self.mega)
        return length_grouped_batches(self.lengths, self.rows, rng, self.mega)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.epoch_batches(self.epoch):
            if len(batch) >= self.parts:
                yield from (part.tolist() for part in np.array_split(np.asarray(batch), self.parts))

    def __len__(self) -> int:
        return self.steps_per_epoch * self.parts
