"""Label-driven synthetic multi-phase CT with inserted pancreatic tumours (issue 3).

From an organ label map (real BTCV/AMOS anatomy or a procedural one) `synthesize_case` makes
arterial, venous and delayed CT volumes in HU with ground truth (1 pancreas, 2 tumour);
`write_dataset` writes an nnU-Net-raw dataset of such cases; `SyntheticCTDataset` makes them on
the fly for training. Research use only.
"""

from PancreasAILib.synthesis.anatomy import (
    ANATOMY_SPLIT,
    Anatomy,
    Organ,
    anatomy_split,
    list_anatomy_maps,
    load_anatomy,
)
from PancreasAILib.synthesis.case import SynthesisConfig, SyntheticCase, synthesize_case
from PancreasAILib.synthesis.dataset import write_dataset
from PancreasAILib.synthesis.procedural import procedural_anatomy
from PancreasAILib.synthesis.tumour import TumourFacts

__all__ = [
    "ANATOMY_SPLIT",
    "Anatomy",
    "Organ",
    "SynthesisConfig",
    "SyntheticCase",
    "TumourFacts",
    "anatomy_split",
    "list_anatomy_maps",
    "load_anatomy",
    "procedural_anatomy",
    "synthesize_case",
    "write_dataset",
]
