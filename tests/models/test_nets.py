"""The U-Net: shapes in 2D, 2.5D and 3D, configurable depth/width/normalisation, the name registry."""

from __future__ import annotations

import pytest
import torch

from pipeline.models.nets import NETWORKS, UNet, build_network, count_parameters


@pytest.mark.parametrize("dims,shape", [(2, (2, 3, 64, 48)), (3, (1, 2, 16, 32, 24))])
def test_output_has_one_logit_per_voxel(dims: int, shape: tuple[int, ...]) -> None:
    net = UNet(dims=dims, in_channels=shape[1], features=4, depth=2).eval()
    with torch.no_grad():
        out = net(torch.rand(shape))
    assert out.shape == (shape[0], 1, *shape[2:])


def test_sizes_that_are_not_a_multiple_of_the_divisor_still_give_the_input_shape() -> None:
    net = UNet(dims=2, in_channels=1, features=4, depth=3).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, 37, 50)).shape == (1, 1, 37, 50)
    assert net.divisor == 8


def test_width_and_depth_change_the_network() -> None:
    small = count_parameters(UNet(dims=2, features=4, depth=2))
    wider = count_parameters(UNet(dims=2, features=8, depth=2))
    deeper = count_parameters(UNet(dims=2, features=4, depth=3))
    assert small < wider and small < deeper
    capped = UNet(dims=2, features=16, depth=4, max_features=32)
    assert max(m.out_channels for m in capped.modules() if isinstance(m, torch.nn.Conv2d)) == 32


@pytest.mark.parametrize("norm,cls", [("batch", torch.nn.BatchNorm2d), ("instance", torch.nn.InstanceNorm2d),
                                      ("group", torch.nn.GroupNorm)])
def test_normalisation_is_configurable(norm: str, cls: type) -> None:
    net = UNet(dims=2, features=8, depth=1, norm=norm)  # type: ignore[arg-type]
    assert any(isinstance(m, cls) for m in net.modules())
    none = UNet(dims=2, features=8, depth=1, norm="none")
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm)) for m in none.modules())


def test_upsampling_interpolates_without_transposed_convolutions() -> None:
    net = UNet(dims=3, features=4, depth=2)
    assert not any(isinstance(m, (torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)) for m in net.modules())
    assert net._mode == "trilinear" and UNet(dims=2)._mode == "bilinear"


def test_registry_builds_by_name_and_refuses_anything_else() -> None:
    net = build_network({"name": "unet", "dims": 2, "in_channels": 3, "features": 4, "depth": 2})
    assert isinstance(net, UNet) and "unet" in NETWORKS
    with pytest.raises(ValueError, match="not one of porelab's networks"):
        build_network({"name": "os.system", "dims": 2})
    with pytest.raises(ValueError, match="does not take"):
        build_network({"name": "unet", "colour": "red"})
    with pytest.raises(ValueError, match="dims must be 2 or 3"):
        UNet(dims=4)


def test_a_residual_refinement_starts_from_its_input_probability() -> None:
    net = UNet(dims=3, in_channels=2, features=4, depth=2, residual_channel=0).eval()
    x = torch.rand(1, 2, 8, 16, 16) * 0.98 + 0.01
    with torch.no_grad():
        p = torch.sigmoid(net(x))
    assert torch.allclose(p[:, 0], x[:, 0], atol=1e-5)
    with pytest.raises(ValueError, match="residual_channel"):
        UNet(dims=3, in_channels=2, residual_channel=2)
