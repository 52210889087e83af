"""Lesion extraction (PANORAMA's dynamic thresholding, sizes and positions in physical space) and the grid moves around it."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from PancreasAILib.cascade.lesions import extract_lesions, longest_axial_diameter, pdac_likelihood


def _grid(shape_zyx, spacing=(1.0, 1.0, 2.0), origin=(10.0, -20.0, 5.0), direction=None):
    grid = sitk.Image([int(v) for v in shape_zyx[::-1]], sitk.sitkUInt8)
    grid.SetSpacing(spacing)
    grid.SetOrigin(origin)
    if direction is not None:
        grid.SetDirection(direction)
    return grid


def _ball(shape, centre, radius_vox):
    zz, yy, xx = np.indices(shape)
    return ((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2) <= radius_vox**2


def test_two_blobs_give_two_lesions_strongest_first_with_physical_centroids():
    shape = (20, 60, 60)
    prob = np.zeros(shape, np.float32)
    prob[_ball(shape, (10, 15, 15), 4)] = 0.6
    prob[_ball(shape, (10, 40, 45), 6)] = 0.9
    grid = _grid(shape)
    lesions, detection, _ = extract_lesions(prob, grid)
    assert [round(les.confidence, 2) for les in lesions] == [0.9, 0.6]
    first = lesions[0]
    # voxel (z10, y40, x45) -> x 10 + 45, y -20 + 40, z 5 + 2*10
    assert np.allclose(first.centroid_mm, (55.0, 20.0, 25.0), atol=0.01)
    assert abs(first.volume_ml - _ball(shape, (10, 40, 45), 6).sum() * 2.0 / 1000) < 1e-6
    assert set(np.unique(detection)) == {0.0, np.float32(0.6), np.float32(0.9)}


def test_centroid_follows_a_flipped_direction_matrix():
    shape = (10, 30, 30)
    prob = np.zeros(shape, np.float32)
    prob[_ball(shape, (5, 10, 20), 3)] = 0.8
    grid = _grid(shape, spacing=(1, 1, 1), origin=(0, 0, 0), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    (lesion,), _, _ = extract_lesions(prob, grid)
    assert np.allclose(lesion.centroid_mm, grid.TransformIndexToPhysicalPoint((20, 10, 5)), atol=0.01)


def test_tiny_and_weak_regions_are_not_lesions_and_restriction_applies():
    shape = (10, 40, 40)
    prob = np.zeros(shape, np.float32)
    prob[5, 5, 5] = 0.95  # a single hot voxel: below the 10-voxel minimum
    prob[_ball(shape, (5, 30, 30), 3)] = 0.05  # below the minimum confidence
    prob[_ball(shape, (5, 20, 10), 3)] = 0.7
    lesions, _, _ = extract_lesions(prob, _grid(shape))
    assert [les.confidence for les in lesions] == [0.7]
    outside = np.zeros(shape, bool)
    lesions, detection, _ = extract_lesions(prob, _grid(shape), restrict=outside)
    assert lesions == [] and not detection.any()


def test_dynamic_threshold_grows_a_lesion_down_to_peak_over_2_5():
    shape = (9, 41, 41)
    zz, yy, xx = np.indices(shape)
    r = np.sqrt((zz - 4) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2)
    prob = np.clip(1.0 - r / 20, 0, 1).astype(np.float32)  # a cone: peak 1 at the centre
    lesions, detection, _ = extract_lesions(prob, _grid(shape, spacing=(1, 1, 1)), min_confidence=0.5)
    assert len(lesions) == 1  # the ring left below 0.4 peaks under the minimum confidence
    assert (detection > 0).sum() == (prob >= 1.0 / 2.5).sum()


def test_the_fringe_of_a_lesion_is_not_a_second_lesion_but_a_separate_blob_is():
    shape = (9, 61, 61)
    zz, yy, xx = np.indices(shape)
    r = np.sqrt((zz - 4) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2)
    prob = np.clip(1.0 - r / 20, 0, 1).astype(np.float32)  # a cone: after the cut at 0.4 a ring peaks at 0.4
    prob[_ball(shape, (4, 50, 50), 3)] = 0.3  # a distinct weak lesion far away
    lesions, detection, _ = extract_lesions(prob, _grid(shape, spacing=(1, 1, 1)))
    assert [round(les.confidence, 2) for les in lesions] == [1.0, 0.3]
    assert set(np.unique(detection)) == {0.0, np.float32(0.3), np.float32(1.0)}


def test_longest_axial_diameter_of_a_disc():
    mask = np.zeros((3, 50, 50), bool)
    mask[1] = _ball((1, 50, 50), (0, 25, 25), 10)[0]
    diameter = longest_axial_diameter(mask, np.array([3.0, 0.5, 0.5]))
    assert 10.0 <= diameter <= 11.0  # 20 voxels across at 0.5 mm, plus one voxel


def test_pdac_likelihood_combines_the_head_and_the_strongest_lesion():
    assert pdac_likelihood(0.2, []) == 0.1
    lesions, _, _ = extract_lesions(np.pad(np.full((3, 4, 4), 0.8, np.float32), 2), _grid((7, 8, 8)))
    assert pdac_likelihood(0.6, lesions) == 0.7


def test_labels_on_the_reference_grid_match_a_full_grid_resampling():
    """roi_to_reference decides labels on the reference voxels inside the box only; outside it is background."""
    from PancreasAILib.cascade.grids import array_to_grid
    from PancreasAILib.cascade.runner import roi_to_reference

    reference = _grid((30, 90, 80), spacing=(0.8, 0.8, 2.5), origin=(-30.0, -40.0, 100.0))
    roi = _grid((12, 24, 20), spacing=(2.0, 2.0, 3.0), origin=(-10.0, -12.0, 115.0))
    rng = np.random.default_rng(0)
    gland = _ball((12, 24, 20), (6, 12, 10), 6.5)
    tumour = _ball((12, 24, 20), (6, 10, 11), 2.5)
    probs = np.zeros((3, 12, 24, 20), np.float32)
    probs[1] = np.where(gland & ~tumour, 0.8, 0.05) + rng.uniform(0, 0.05, gland.shape)
    probs[2] = np.where(tumour, 0.85, 0.02)
    probs[0] = 1.0 - probs[1] - probs[2]
    restrict = gland.copy()
    restrict[:, :, 11:] = False  # a tumour half outside the allowed region keeps only its allowed half

    labels = sitk.GetArrayFromImage(roi_to_reference(probs, roi, reference, restrict))

    def full(array, interpolator):
        moved = sitk.Resample(array_to_grid(array, roi), reference, sitk.Transform(), interpolator, 0.0)
        return sitk.GetArrayFromImage(moved)

    pancreas, cancer = full(probs[1], sitk.sitkLinear), full(probs[2], sitk.sitkLinear)
    expected = np.argmax(np.stack([1 - pancreas - cancer, pancreas, cancer]), axis=0).astype(np.uint8)
    expected[(expected == 2) & (full(restrict.astype(np.uint8), sitk.sitkNearestNeighbor) == 0)] = 0
    assert (labels == 1).sum() > 1000 and (labels == 2).sum() > 50
    np.testing.assert_array_equal(labels, expected)
    assert not labels[:, :, :5].any() and not labels[:3].any()  # the reference beyond the box stays empty


def test_resampling_a_small_box_smooths_only_around_it_and_matches_the_whole_scan():
    """resample_onto crops the source to the target box plus 5 sigma before anti-aliasing; the values must
    equal those from smoothing the whole image (inside, at the scan's edge, and past it)."""
    from PancreasAILib.cascade.grids import BoundingBox, grid_for_box, image_box, resample_onto

    rng = np.random.default_rng(1)
    array = ndi.gaussian_filter(rng.normal(0, 300, (60, 200, 220)), 1.5).astype(np.float32)
    array[20:40, 80:120, 90:140] += 400.0  # a bright organ with sharp borders
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.8, 2.5))
    image.SetOrigin((-80.0, -70.0, 30.0))
    whole = image_box(image)

    def smoothed_everywhere(grid):
        sigma = [
            0.4 * n if n > 1.5 * o else 0.0
            for n, o in zip(grid.GetSpacing(), image.GetSpacing(), strict=True)
        ]
        source = sitk.SmoothingRecursiveGaussian(image, [max(s, 1e-3) for s in sigma])
        return sitk.GetArrayFromImage(sitk.Resample(source, grid, sitk.Transform(), sitk.sitkLinear, -1024.0))

    inside = grid_for_box(BoundingBox((-20.0, -10.0, 70.0), (30.0, 30.0, 120.0)), (2.0, 2.0, 3.0))
    across_edge = grid_for_box(
        BoundingBox((whole.low[0] - 15, -20.0, whole.low[2] - 9), (-50.0, 20.0, 60.0)), (2.0, 2.0, 3.0)
    )
    for grid in (inside, across_edge):
        np.testing.assert_allclose(
            resample_onto(image, grid, default=-1024.0), smoothed_everywhere(grid), atol=0.05
        )
