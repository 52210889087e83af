"""nnU-Net v2's PlainConvUNet, rebuilt so its checkpoints load without nnunetv2 installed.

nnunetv2 and dynamic_network_architectures pull in timm and torchvision, which do not run beside
this project's torch; the plain U-Net they train by default (and TotalSegmentator ships) is a
short stack of standard layers, so it is rebuilt here with the same module names: a checkpoint's
`network_weights` then loads with `strict=True`, which is the check that the rebuild is faithful.
Only the plain convolutional U-Net is supported (residual encoders and others are refused).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

PLAIN_UNET = "PlainConvUNet"


@dataclass(frozen=True)
class NnUNetArchitecture:
    """The arguments of a 3D PlainConvUNet, from either plans format (v2.4+ `architecture` or older keys)."""

    input_channels: int
    num_classes: int
    features_per_stage: tuple[int, ...]
    kernel_sizes: tuple[tuple[int, ...], ...]
    strides: tuple[tuple[int, ...], ...]
    n_conv_per_stage: tuple[int, ...]
    n_conv_per_stage_decoder: tuple[int, ...]
    conv_bias: bool = True
    norm_eps: float = 1e-5
    negative_slope: float = 0.01

    @classmethod
    def from_plans(cls, configuration: dict, input_channels: int, num_classes: int) -> NnUNetArchitecture:
        architecture = configuration.get("architecture")
        if architecture is not None:  # nnU-Net v2.4 and later
            name = str(architecture.get("network_class_name", ""))
            if not name.endswith("." + PLAIN_UNET):
                raise ValueError(f"network {name!r} is not a {PLAIN_UNET}")
            kw = architecture["arch_kwargs"]
            if "BatchNorm" in str(kw.get("norm_op")) or "InstanceNorm" not in str(kw.get("norm_op")):
                raise ValueError(
                    f"normalisation {kw.get('norm_op')!r} is not the InstanceNorm3d nnU-Net uses"
                )
            return cls(
                input_channels,
                num_classes,
                _ints(kw["features_per_stage"]),
                _nested(kw["kernel_sizes"]),
                _nested(kw["strides"]),
                _per_stage(kw["n_conv_per_stage"], kw["n_stages"]),
                _per_stage(kw["n_conv_per_stage_decoder"], kw["n_stages"] - 1),
                bool(kw.get("conv_bias", True)),
                float((kw.get("norm_op_kwargs") or {}).get("eps", 1e-5)),
                float((kw.get("nonlin_kwargs") or {}).get("negative_slope", 0.01)),
            )
        name = configuration.get("UNet_class_name")
        if name != PLAIN_UNET:
            raise ValueError(f"network {name!r} is not a {PLAIN_UNET}")
        kernels = _nested(configuration["conv_kernel_sizes"])
        base, cap = int(configuration["UNet_base_num_features"]), int(configuration["unet_max_num_features"])
        return cls(
            input_channels,
            num_classes,
            tuple(min(base * 2**i, cap) for i in range(len(kernels))),
            kernels,
            _nested(configuration["pool_op_kernel_sizes"]),
            _per_stage(configuration["n_conv_per_stage_encoder"], len(kernels)),
            _per_stage(configuration["n_conv_per_stage_decoder"], len(kernels) - 1),
        )


def _ints(values: Sequence) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _nested(values: Sequence) -> tuple[tuple[int, ...], ...]:
    return tuple(_ints(v) if isinstance(v, Sequence) else (int(v),) * 3 for v in values)


def _per_stage(values: int | Sequence, stages: int) -> tuple[int, ...]:
    return (int(values),) * stages if isinstance(values, int) else _ints(values)


class ConvNormAct(nn.Module):
    """conv -> instance norm -> leaky ReLU; `all_modules` repeats them, as in nnU-Net's state dicts."""

    def __init__(
        self, arch: NnUNetArchitecture, cin: int, cout: int, kernel: Sequence[int], stride: Sequence[int]
    ):
        super().__init__()
        self.conv = nn.Conv3d(
            cin,
            cout,
            tuple(kernel),
            tuple(stride),
            padding=[(k - 1) // 2 for k in kernel],
            bias=arch.conv_bias,
        )
        self.norm = nn.InstanceNorm3d(cout, eps=arch.norm_eps, affine=True)
        self.nonlin = nn.LeakyReLU(arch.negative_slope, inplace=True)
        self.all_modules = nn.Sequential(self.conv, self.norm, self.nonlin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.all_modules(x)


class StackedConvs(nn.Module):
    def __init__(self, arch: NnUNetArchitecture, n: int, cin: int, cout: int, kernel, first_stride):
        super().__init__()
        layers = [ConvNormAct(arch, cin, cout, kernel, first_stride)]
        layers += [ConvNormAct(arch, cout, cout, kernel, (1, 1, 1)) for _ in range(n - 1)]
        self.convs = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


class PlainEncoder(nn.Module):
    def __init__(self, arch: NnUNetArchitecture):
        super().__init__()
        stages, cin = [], arch.input_channels
        for s, cout in enumerate(arch.features_per_stage):
            # strided convolution downsamples (nnU-Net's default pool='conv'); one block per stage
            stages.append(
                nn.Sequential(
                    StackedConvs(
                        arch, arch.n_conv_per_stage[s], cin, cout, arch.kernel_sizes[s], arch.strides[s]
                    )
                )
            )
            cin = cout
        self.stages = nn.Sequential(*stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class PlainDecoder(nn.Module):
    def __init__(self, arch: NnUNetArchitecture, encoder: PlainEncoder):
        super().__init__()
        self.encoder = encoder  # nnU-Net's decoder keeps a reference: its keys appear twice in checkpoints
        feats, stages, ups, heads = arch.features_per_stage, [], [], []
        for s in range(1, len(feats)):
            below, skip = feats[-s], feats[-(s + 1)]
            stride = arch.strides[-s]
            ups.append(nn.ConvTranspose3d(below, skip, stride, stride, bias=arch.conv_bias))
            stages.append(
                StackedConvs(
                    arch,
                    arch.n_conv_per_stage_decoder[s - 1],
                    2 * skip,
                    skip,
                    arch.kernel_sizes[-(s + 1)],
                    (1, 1, 1),
                )
            )
            heads.append(nn.Conv3d(skip, arch.num_classes, 1, 1, 0, bias=True))  # deep-supervision heads kept
        self.stages = nn.ModuleList(stages)
        self.transpconvs = nn.ModuleList(ups)
        self.seg_layers = nn.ModuleList(heads)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        x = skips[-1]
        for s, (up, stage) in enumerate(zip(self.transpconvs, self.stages, strict=True)):
            x = stage(torch.cat((up(x), skips[-(s + 2)]), 1))
        return self.seg_layers[-1](x)


class PlainConvUNet(nn.Module):
    """Logits of the full-resolution output (no deep supervision at inference)."""

    def __init__(self, arch: NnUNetArchitecture):
        super().__init__()
        self.arch = arch
        self.encoder = PlainEncoder(arch)
        self.decoder = PlainDecoder(arch, self.encoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
