"""DDIM sampler of the anomaly heatmap: schedule, determinism, inversion, guidance, missing phases.

The denoisers here are exact where that is possible: for data that are standard normal per pixel
the optimal noise prediction is eps(x_t, t) = sqrt(1 - abar_t) * x_t, so DDIM encode/decode with
zero guidance must give back its input up to the strided schedule's discretisation error.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from PancreasAILib.anomaly.sampler import (
    NoiseSchedule,
    ddim_decode,
    ddim_encode,
    healthy_gradient,
    q_sample,
    strided_timesteps,
)
from PancreasAILib.models.ddpm import DDPMConfig, TinyUNet
from PancreasAILib.models.noise_classifier import NoiseClassifier, NoiseClassifierConfig

ALPHA_BAR = NoiseSchedule().alpha_bar()


class GaussianOptimal(nn.Module):
    """The exact denoiser for N(0, I) data."""

    def forward(self, x, t, phase_mask):
        return (1 - ALPHA_BAR[t]).sqrt().view(-1, 1, 1, 1) * x


class DarkBlobClassifier(nn.Module):
    """logit("tumour") grows as the centre of the slice gets darker than its surroundings."""

    def forward(self, x, t, phase_mask):
        centre = x[:, :, 6:10, 6:10].mean(dim=(1, 2, 3))
        return -40.0 * (centre - x.mean(dim=(1, 2, 3)))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread; several would only fight over a busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_strided_timesteps_span_zero_to_L():
    ts = strided_timesteps(250, 10)
    assert ts[0] == 0 and ts[-1] == 250 and len(ts) == 11
    assert np.all(np.diff(ts) > 0)
    with pytest.raises(ValueError):
        strided_timesteps(5, 10)
    with pytest.raises(ValueError):
        strided_timesteps(250, 0)


def test_zero_guidance_round_trip_reconstructs_input():
    torch.manual_seed(0)
    x0 = torch.randn(4, 3, 16, 16)
    mask = torch.ones(4, 3)
    ts = strided_timesteps(250, 10)
    x_l = ddim_encode(GaussianOptimal(), x0, mask, ALPHA_BAR, ts)
    assert (x_l - x0).abs().mean() > 1e-4  # encoding did something
    back = ddim_decode(GaussianOptimal(), x_l, mask, ALPHA_BAR, ts)
    assert (back - x0).abs().max() < 0.02 * x0.abs().max()
    textbook = ddim_decode(
        GaussianOptimal(), ddim_encode(GaussianOptimal(), x0, mask, ALPHA_BAR, ts, False), mask, ALPHA_BAR, ts
    )
    assert (back - x0).abs().mean() < 0.2 * (textbook - x0).abs().mean()  # why lookahead is the default


def test_sampler_is_deterministic_for_a_seed():
    def run(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        net = TinyUNet(DDPMConfig(base=8, mults=(1, 2), emb=16)).eval()
        for p in net.parameters():  # the output layer starts at zero; make the net non-trivial
            p.data.add_(0.05 * torch.randn_like(p))
        clf = NoiseClassifier(NoiseClassifierConfig(base=8, mults=(1, 2), emb=16)).eval()
        x = torch.randn(2, 3, 16, 16)
        mask = torch.ones(2, 3)
        ts = strided_timesteps(200, 5)
        return ddim_decode(net, ddim_encode(net, x, mask, ALPHA_BAR, ts), mask, ALPHA_BAR, ts, clf, 5.0)

    a, b, c = run(3), run(3), run(4)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_guidance_moves_the_reconstruction_towards_healthy():
    x0 = torch.zeros(2, 3, 16, 16)
    x0[:, :, 6:10, 6:10] = -1.5  # a dark "lesion"
    mask = torch.ones(2, 3)
    ts = strided_timesteps(250, 10)
    clf = DarkBlobClassifier()
    x_l = ddim_encode(GaussianOptimal(), x0, mask, ALPHA_BAR, ts)
    plain = ddim_decode(GaussianOptimal(), x_l, mask, ALPHA_BAR, ts, clf, 0.0)
    guided = ddim_decode(GaussianOptimal(), x_l, mask, ALPHA_BAR, ts, clf, 10.0)
    t0 = torch.zeros(2, dtype=torch.long)
    p_plain = torch.sigmoid(-clf(plain, t0, mask))
    p_guided = torch.sigmoid(-clf(guided, t0, mask))
    assert (p_guided > p_plain + 0.1).all()
    lesion = (slice(None), slice(None), slice(6, 10), slice(6, 10))
    assert guided[lesion].mean() > plain[lesion].mean() + 0.1  # the lesion is "healed" (brightened)
    err_plain = (plain - x0).abs().sum(1)[:, 6:10, 6:10].mean()
    err_guided = (guided - x0).abs().sum(1)[:, 6:10, 6:10].mean()
    assert err_guided > err_plain  # so the anomaly map lights up there


def test_healthy_gradient_points_away_from_the_tumour_class():
    x = torch.zeros(1, 3, 16, 16)
    x[:, :, 6:10, 6:10] = -1.0
    grad = healthy_gradient(DarkBlobClassifier(), x, 100, torch.ones(1, 3))
    assert grad[:, :, 6:10, 6:10].mean() > 0 > grad[:, :, :4, :4].mean()


def test_missing_phases_stay_zero_and_do_not_leak():
    torch.manual_seed(1)
    net = TinyUNet(DDPMConfig(base=8, mults=(1, 2), emb=16)).eval()
    for p in net.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, 3, 16, 16)
    mask = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    ts = strided_timesteps(250, 5)
    out_a = ddim_decode(net, ddim_encode(net, x, mask, ALPHA_BAR, ts), mask, ALPHA_BAR, ts)
    x_other = x.clone()
    x_other[:, [0, 2]] = 1e3  # garbage in the absent channels
    out_b = ddim_decode(net, ddim_encode(net, x_other, mask, ALPHA_BAR, ts), mask, ALPHA_BAR, ts)
    assert torch.equal(out_a, out_b)
    assert out_a[:, [0, 2]].abs().max() == 0


def test_q_sample_matches_the_forward_process():
    x0 = torch.ones(3, 1, 4, 4)
    t = torch.tensor([0, 250, 999])
    noise = torch.zeros_like(x0)
    out = q_sample(x0, t, noise, ALPHA_BAR)
    assert torch.allclose(out[:, 0, 0, 0], ALPHA_BAR[t].sqrt())
