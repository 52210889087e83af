"""How one run of the cascade departs from the release's registered choices, and what it then uses.

The release's inference choices (stage 1's test-time scales and growing threshold, stage 2's lesion
weighting and vessel margin) are stored with the weights (`StageSpec`), because the likelihood
calibration is fitted with them. A run may override any of them: `CascadeSettings` says which
(None: the registered one), and `resolve` turns it, with the two specifications, into the
`RunSettings` the cascade works with. Why one object: a new setting is then added in one place,
not threaded through the CLI, the engine's model loader and the cascade as parallel keywords.
"""

from __future__ import annotations

from dataclasses import dataclass

from PancreasAILib.cascade.attenuation import check_ramp, check_weight
from PancreasAILib.cascade.spec import StageSpec
from PancreasAILib.cascade.vessels import check_margin

NO_GROWING = 0.5  # a growing threshold of 0.5 grows nothing: the component is already p >= 0.5


def check_grow_threshold(threshold: float) -> float:
    """A growing threshold is a probability in (0, 0.5]; returns it."""
    if not 0.0 < threshold <= NO_GROWING:
        raise ValueError(f"stage 1's growing threshold must lie in (0, 0.5], got {threshold}")
    return float(threshold)


@dataclass(frozen=True)
class RunSettings:
    """What a run of the cascade uses (every value resolved; see `CascadeSettings`)."""

    restrict_to_pancreas: bool = True  # tumour only within 10 mm of the gland
    mirror: bool = True  # test-time mirroring in stage 2
    # Test-time magnifications of stage 1's input, averaged (1.0 alone: the scan as it is)
    stage1_scales: tuple[float, ...] = (1.0,)
    # Probability down to which stage 1's largest component is grown (`grow_component`); None: not
    stage1_grow_threshold: float | None = None
    # Share of its confidence a lesion darker than the gland in neither the arterial nor the venous
    # phase keeps, and the half-width (HU) of the grade between (`cascade.attenuation`)
    non_hypo_lesion_weight: float = 1.0
    attenuation_ramp_hu: float = 0.0
    # HU above the gland's venous median beyond which bright tissue continuing outside it is vessel
    # (`cascade.vessels`); None: not applied
    vessel_margin_hu: float | None = None


@dataclass(frozen=True)
class CascadeSettings:
    """A run's overrides of the registered choices; every None means "as registered"."""

    restrict_to_pancreas: bool = True
    mirror: bool = True
    stage1_scales: tuple[float, ...] | None = None
    stage1_grow_threshold: float | None = None  # 0.5: no growing
    non_hypo_lesion_weight: float | None = None
    attenuation_ramp_hu: float | None = None  # 0: the hard cut at the gland's attenuation
    vessel_margin_hu: float | None = None
    keep_bright_vessels: bool = False  # the vessel step off, whatever is registered

    def resolve(self, spec1: StageSpec, spec2: StageSpec, *, external_stage1: bool = False) -> RunSettings:
        """The settings a run uses; raises ValueError naming a value out of its range.

        The registered growing threshold was chosen for the shipped network's probabilities, so an
        external stage 1 (nnU-Net, TotalSegmentator) is grown only when the run asks for it."""
        scales = tuple(self.stage1_scales) if self.stage1_scales is not None else spec1.test_time_scales
        if not scales or min(scales) <= 0:
            raise ValueError(f"stage-1 test-time scales must be positive magnifications, got {scales}")
        grow = self.stage1_grow_threshold
        if grow is None:
            grow = None if external_stage1 else spec1.grow_threshold
        margin = None if self.keep_bright_vessels else _given(self.vessel_margin_hu, spec2.vessel_margin_hu)
        return RunSettings(
            restrict_to_pancreas=self.restrict_to_pancreas,
            mirror=self.mirror,
            stage1_scales=scales,
            stage1_grow_threshold=None if grow is None or grow == NO_GROWING else check_grow_threshold(grow),
            non_hypo_lesion_weight=check_weight(
                _given(self.non_hypo_lesion_weight, spec2.non_hypo_lesion_weight)
            ),
            attenuation_ramp_hu=check_ramp(_given(self.attenuation_ramp_hu, spec2.attenuation_ramp_hu)),
            vessel_margin_hu=None if margin is None else check_margin(margin),
        )


def _given(value: float | None, registered: float | None) -> float | None:
    return registered if value is None else value
