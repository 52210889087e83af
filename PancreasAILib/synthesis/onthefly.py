"""A torch dataset that synthesises training cases as it goes.

The synthetic-tumour literature found on-the-fly generation clearly better than a fixed offline
set: every epoch sees new tumours, intensities and noise on the training anatomy. Sample `i`
depends only on (seed, i), so a run is reproducible; DataLoader workers take interleaved indices,
so no two workers make the same case. Anatomy maps are loaded once per worker process.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from torch.utils.data import IterableDataset, get_worker_info

from PancreasAILib.phases import PHASE_ORDER
from PancreasAILib.synthesis.case import SynthesisConfig, synthesize_case
from PancreasAILib.synthesis.dataset import PROCEDURAL, anatomy_for_case


class SyntheticCTDataset(IterableDataset):
    """Yields {"image": (C, Z, Y, X) float32, "label": (Z, Y, X) int64, "phase_mask": (C,) bool, ...}.

    `anatomy`: label-map paths, or "procedural". `phase_dropout`: probability of dropping each phase
    (at least one is kept; dropped channels are zero and masked). `crop_shape`: (Z, Y, X) voxels
    around the pancreas with random jitter (padded with air/background). `hu_window`: map HU
    (lo, hi) to 0..1. `length=None` yields for ever.
    """

    def __init__(
        self,
        anatomy: Sequence[str | Path] | str = PROCEDURAL,
        config: SynthesisConfig | None = None,
        seed: int = 0,
        length: int | None = None,
        phase_dropout: float = 0.0,
        crop_shape: tuple[int, int, int] | None = None,
        hu_window: tuple[float, float] | None = None,
        as_tensors: bool = True,
    ) -> None:
        super().__init__()
        self.sources = [PROCEDURAL] if anatomy == PROCEDURAL else [str(p) for p in anatomy]
        self.config = config or SynthesisConfig.coarse(keep_organ_labels=False)
        self.seed = int(seed)
        self.length = length
        self.phase_dropout = float(phase_dropout)
        self.crop_shape = crop_shape
        self.hu_window = hu_window
        self.as_tensors = as_tensors

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("An endless SyntheticCTDataset has no length.")
        return self.length

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None:
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
        index = worker
        while self.length is None or index < self.length:
            yield self.sample(index)
            index += workers

    def sample(self, index: int) -> dict:
        """The sample with this index (deterministic)."""
        anatomy = anatomy_for_case(self.sources, self.seed, index)
        case = synthesize_case(anatomy, self.config, seed=self.seed, case_index=index)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, index, 0xD0]))
        labels = sitk.GetArrayFromImage(case.labels)
        channels, mask = [], []
        for phase in PHASE_ORDER:
            present = phase in case.phases
            channels.append(
                sitk.GetArrayFromImage(case.phases[phase]).astype(np.float32)
                if present
                else np.full(labels.shape, -1024.0, np.float32)
            )
            mask.append(present)
        mask = np.array(mask)
        if self.phase_dropout > 0:
            drop = (rng.uniform(size=len(mask)) < self.phase_dropout) & mask
            if drop.sum() >= mask.sum():
                drop[rng.choice(np.nonzero(mask)[0])] = False
            mask &= ~drop
        image = np.stack(channels)
        if self.crop_shape is not None:
            image, labels = _crop(image, labels, self.crop_shape, rng)
        if self.hu_window is not None:
            lo, hi = self.hu_window
            image = np.clip((image - lo) / (hi - lo), 0.0, 1.0)
        image[~mask] = 0.0
        out = {
            "image": image,
            "label": labels.astype(np.int64),
            "phase_mask": mask,
            "spacing": tuple(case.labels.GetSpacing()[::-1]),
            "case_index": index,
            "anatomy": case.meta["anatomy"],
            "has_tumour": bool(case.tumours),
        }
        if self.as_tensors:
            out["image"] = torch.from_numpy(np.ascontiguousarray(out["image"]))
            out["label"] = torch.from_numpy(np.ascontiguousarray(out["label"]))
            out["phase_mask"] = torch.from_numpy(out["phase_mask"])
        return out


def _crop(
    image: np.ndarray, labels: np.ndarray, shape: tuple[int, int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A box of `shape` centred near the pancreas (jitter up to a quarter box), padded as needed."""
    where = np.argwhere(labels > 0)
    centre = where.mean(axis=0) if len(where) else np.asarray(labels.shape) / 2
    centre = centre + rng.uniform(-0.25, 0.25, size=3) * np.asarray(shape)
    start = np.round(centre - np.asarray(shape) / 2).astype(int)
    out_img = np.full((image.shape[0], *shape), -1024.0, dtype=np.float32)
    out_lab = np.zeros(shape, dtype=labels.dtype)
    src = [slice(max(s, 0), min(s + n, m)) for s, n, m in zip(start, shape, labels.shape, strict=True)]
    dst = [slice(a.start - s, a.stop - s) for a, s in zip(src, start, strict=True)]
    out_img[(slice(None), *dst)] = image[(slice(None), *src)]
    out_lab[tuple(dst)] = labels[tuple(src)]
    return out_img, out_lab
