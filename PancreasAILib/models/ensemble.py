"""Several trained networks of one architecture used as one, their probabilities averaged."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class ProbabilityAverage(torch.nn.Module):
    """Returns the log of the members' mean softmax, so it drops in wherever one network's logits go.

    Why the log: every caller (`cascade.sliding.sliding_window`) applies a softmax to what a network
    returns, and softmax(log(mean p)) is mean p, so the ensemble's output is exactly the average of
    the members' probabilities, window by window and therefore after the Gaussian blending too.
    Averaging probabilities rather than logits keeps one confident member from outvoting the others.
    """

    def __init__(self, members: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = torch.nn.ModuleList(members)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if len(self.members) == 1:
            return self.members[0](*inputs)
        mean = torch.stack([torch.softmax(m(*inputs).float(), dim=1) for m in self.members]).mean(dim=0)
        return torch.log(mean.clamp_min(torch.finfo(mean.dtype).tiny))
