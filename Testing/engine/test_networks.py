"""The cascade's networks: shapes, missing-phase masking, and sliding-window blending."""

from __future__ import annotations

import numpy as np
import torch

from PancreasAILib.cascade.sliding import sliding_window
from PancreasAILib.models.ensemble import ProbabilityAverage
from PancreasAILib.models.fusion import CrossPhaseFusion
from PancreasAILib.models.multiphase import MultiPhaseConfig, MultiPhaseTumourNet
from PancreasAILib.models.unet import CoarseUNet, CoarseUNetConfig

TINY = (4, 8, 16, 16)


def test_stage2_output_ignores_the_content_of_missing_phases():
    torch.manual_seed(0)
    net = MultiPhaseTumourNet(MultiPhaseConfig(channels=TINY, fpn_channels=8)).eval()
    image = torch.randn(2, 3, 8, 32, 32)
    prior = torch.rand(2, 1, 8, 32, 32)
    mask = torch.tensor([[False, True, False], [True, True, True]])
    changed = image.clone()
    changed[0, 0] = torch.randn(8, 32, 32) * 5  # sample 0 has no arterial or delayed phase
    changed[0, 2] = 1000.0
    with torch.no_grad():
        seg_a, cls_a = net(image, prior, mask)
        seg_b, cls_b = net(changed, prior, mask)
    assert seg_a.shape == (2, 3, 8, 32, 32) and cls_a.shape == (2, 2)
    assert torch.allclose(seg_a[0], seg_b[0], atol=1e-5) and torch.allclose(cls_a[0], cls_b[0], atol=1e-5)


def test_fusion_attention_weights_cover_only_present_phases():
    fusion = CrossPhaseFusion(channels=6)
    features = torch.randn(2, 3, 6, 2, 4, 4)
    mask = torch.tensor([[True, False, True], [False, True, False]])
    alpha, beta = fusion.weights(features, mask)
    assert torch.allclose(beta.sum(-1), torch.ones(2, 3))
    assert torch.all(beta[0, :, 1] == 0) and torch.all(beta[1, :, [0, 2]] == 0)
    assert alpha.shape == (2, 3, 6)


def test_venous_only_batch_skips_the_other_encoders():
    net = MultiPhaseTumourNet(MultiPhaseConfig(channels=TINY, fpn_channels=8)).eval()
    called = []
    for p, encoder in enumerate(net.encoders):
        encoder.register_forward_hook(lambda *_, p=p: called.append(p))
    with torch.no_grad():
        net(torch.randn(1, 3, 8, 32, 32), torch.zeros(1, 1, 8, 32, 32), torch.tensor([[False, True, False]]))
    assert called == [1]


def test_stage1_network_shapes_and_gradients():
    net = CoarseUNet(CoarseUNetConfig(channels=TINY))
    out = net(torch.randn(1, 3, 16, 32, 32), torch.tensor([[True, True, False]]))
    assert out.shape == (1, 2, 16, 32, 32)
    out.mean().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_sliding_window_reproduces_a_pointwise_predictor_on_odd_sizes():
    inputs = torch.randn(2, 13, 37, 29)

    def predict(windows):  # logits that depend on each voxel only: blending must return them exactly
        return torch.stack([windows[:, 0], -windows[:, 0]], dim=1), windows.mean(dim=(2, 3, 4))

    probs, best = sliding_window(predict, inputs, patch=(8, 16, 16), overlap=0.5, batch=3)
    expected = torch.softmax(torch.stack([inputs[0], -inputs[0]]), dim=0)
    assert probs.shape == (2, 13, 37, 29)
    assert torch.allclose(probs, expected, atol=1e-5)
    assert best is not None and best.shape == (2,)


def test_sliding_window_pads_inputs_smaller_than_the_patch():
    inputs = torch.randn(1, 4, 10, 10)
    probs, _ = sliding_window(lambda w: (torch.cat([w, -w], 1), None), inputs, patch=(8, 16, 16))
    assert probs.shape == (2, 4, 10, 10)
    assert np.allclose(probs[0].numpy(), torch.sigmoid(2 * inputs[0]).numpy(), atol=1e-5)


def test_mirrored_stage2_prediction_is_equivariant_to_mirroring_the_patient():
    from PancreasAILib.cascade.predict import predict_stage2

    torch.manual_seed(1)
    net = MultiPhaseTumourNet(MultiPhaseConfig(channels=TINY, fpn_channels=8)).eval()
    rng = np.random.default_rng(0)
    image = rng.normal(size=(3, 12, 40, 36)).astype(np.float32)
    prior = rng.uniform(size=(12, 40, 36)).astype(np.float32)
    mask = np.array([True, True, False])
    patch = (8, 32, 32)
    plain, _ = predict_stage2(net, image, prior, mask, patch)
    probs, pdac = predict_stage2(net, image, prior, mask, patch, mirror=True)
    flipped, pdac_flipped = predict_stage2(net, image[..., ::-1], prior[..., ::-1], mask, patch, mirror=True)
    np.testing.assert_allclose(flipped, probs[..., ::-1], atol=1e-5)
    assert abs(pdac - pdac_flipped) < 1e-5
    assert not np.allclose(plain, probs, atol=1e-3)  # an untrained network is far from symmetric
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)


def test_an_ensemble_hands_the_sliding_window_its_members_mean_probability():
    torch.manual_seed(1)
    members = [CoarseUNet(CoarseUNetConfig(channels=TINY)).eval() for _ in range(2)]
    image, mask = torch.randn(1, 3, 16, 32, 32), torch.tensor([[True, False, True]])
    with torch.no_grad():
        mean = sum(torch.softmax(m(image, mask), dim=1) for m in members) / 2
        single = members[0](image, mask)
        ensemble = ProbabilityAverage(members)
        assert torch.allclose(torch.softmax(ensemble(image, mask), dim=1), mean, atol=1e-6)
        assert torch.equal(ProbabilityAverage(members[:1])(image, mask), single)  # one member: unchanged
