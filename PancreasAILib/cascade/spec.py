"""What each stage expects of its input: spacing, patch and ROI margins (stored with the weights).

The defaults are the shipped CPU configuration. Stage 1 follows PANORAMA's coarse model (about
4 mm in-plane); stage 2 works at 2 x 2 x 3 mm on a box around the pancreas, a compromise between
PANORAMA's 0.75 x 0.75 x 1.5 mm and what trains on a 2-core CPU (the smallest PANORAMA-quartile
tumour, 1.1 mL, still spans about 90 voxels).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class StageSpec:
    """What a stage expects and the release's choices for it, stored with its weights.

    Both stages: spacing (x, y, z mm), training/inference patch (z, y, x voxels), ROI margins
    (x, y, z mm), the test-time magnifications whose probabilities inference averages (1.0 alone:
    the scan as it is). Stage 1: the probability down to which its largest component at 0.5 is
    grown before the stage-2 box and prior are taken (`cascade.runner.grow_component`; None: not
    grown). Stage 2: the share of its confidence a lesion darker than the gland in neither the
    arterial nor the venous phase keeps (1.0: not weighed) and the half-width in HU over which that
    share is graded (0: a hard cut at the gland's attenuation; `cascade.attenuation`), and the margin
    in HU above the gland's venous median beyond which bright tissue continuing outside the gland is
    vessel (`cascade.vessels`; None: not applied). The likelihood calibration is fitted with these
    choices, so a run that departs from them says so (`cascade.settings`). Stage 2 trained relative
    to the gland: the HU level each phase's gland is shifted to before the network sees it
    (`cascade.gland_level`; None: absolute HU). That one belongs to the weights, not to the release's
    choices."""

    spacing: tuple[float, float, float]
    patch: tuple[int, int, int]
    roi_margin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    test_time_scales: tuple[float, ...] = (1.0,)
    non_hypo_lesion_weight: float = 1.0
    vessel_margin_hu: float | None = None
    grow_threshold: float | None = None
    attenuation_ramp_hu: float = 0.0
    gland_reference_hu: tuple[float, float, float] | None = None

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def with_choices_of(self, registered: dict) -> StageSpec:
        """This specification with the release's inference choices taken from a registered one.

        Why: the choices were decided on the release's outputs by rules, not learnt by the network;
        new weights of the same stage keep them until a rule decides otherwise (replacing them by
        the defaults silently switched off stage 1's growing and the lesion weighting)."""
        merged = {**self.to_dict(), **{k: registered[k] for k in INFERENCE_CHOICES if k in registered}}
        return StageSpec.from_dict(merged)

    @classmethod
    def from_dict(cls, data: dict) -> StageSpec:
        return cls(
            tuple(data["spacing"]),
            tuple(data["patch"]),
            tuple(data.get("roi_margin_mm", (0, 0, 0))),
            tuple(data.get("test_time_scales", (1.0,))),
            float(data.get("non_hypo_lesion_weight", 1.0)),
            None if data.get("vessel_margin_hu") is None else float(data["vessel_margin_hu"]),
            None if data.get("grow_threshold") is None else float(data["grow_threshold"]),
            float(data.get("attenuation_ramp_hu", 0.0)),
            None
            if data.get("gland_reference_hu") is None
            else tuple(float(v) for v in data["gland_reference_hu"]),
        )


# The fields that are the release's decisions about inference rather than what the network expects.
INFERENCE_CHOICES = (
    "test_time_scales",
    "non_hypo_lesion_weight",
    "vessel_margin_hu",
    "grow_threshold",
    "attenuation_ramp_hu",
)

STAGE1 = StageSpec(spacing=(4.0, 4.0, 6.0), patch=(32, 64, 64))
# Margins around the stage-1 pancreas box: enough to hold a tumour the coarse model cut short.
# 40 HU: venous-phase portal/splenic vein (about 160-200 HU) against pancreas (90-130 HU); see cascade.vessels.
STAGE2 = StageSpec(
    spacing=(2.0, 2.0, 3.0), patch=(24, 64, 64), roi_margin_mm=(24.0, 24.0, 15.0), vessel_margin_hu=40.0
)
