"""Checkpoints: weights and optimiser state round-trip through safetensors + JSON; the newest whole one is found."""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.models.nets import UNet
from pipeline.train.checkpoint import latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint


def _trained_pair() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    net = UNet(dims=2, in_channels=1, features=4, depth=1)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        net(torch.rand(2, 1, 8, 8)).mean().backward()
        opt.step()
    return net, opt


def test_round_trip_restores_weights_and_optimiser(tmp_path: Path) -> None:
    net, opt = _trained_pair()
    folder = save_checkpoint(tmp_path, 3, net=net, optimizer=opt, state={"history": [{"epoch": 3}], "stage_hash": "h"})
    assert folder.name == "epoch-0003"
    net2 = UNet(dims=2, in_channels=1, features=4, depth=1)
    opt2 = torch.optim.AdamW(net2.parameters(), lr=1e-3)
    state = load_checkpoint(folder, net=net2, optimizer=opt2)
    assert state["epoch"] == 3 and state["history"] == [{"epoch": 3}]
    for a, b in zip(net.state_dict().values(), net2.state_dict().values()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k]["exp_avg_sq"], s2[k]["exp_avg_sq"]) for k in s1)
    # the next step is the same from both
    x = torch.rand(2, 1, 8, 8)
    for n, o in ((net, opt), (net2, opt2)):
        o.zero_grad()
        n(x).mean().backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), net2.parameters()))


def test_latest_is_the_newest_whole_checkpoint_of_the_stage(tmp_path: Path) -> None:
    net, opt = _trained_pair()
    for e, h in ((1, "a"), (2, "a"), (3, "b")):
        save_checkpoint(tmp_path, e, net=net, optimizer=opt, state={"stage_hash": h})
    (tmp_path / "epoch-0009").mkdir()  # no state.json: not whole
    assert latest_checkpoint(tmp_path).name == "epoch-0003"
    assert latest_checkpoint(tmp_path, stage_hash="a").name == "epoch-0002"
    assert latest_checkpoint(tmp_path, stage_hash="c") is None
    prune_checkpoints(tmp_path, keep=1, protect=("epoch-0001",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0001", "epoch-0009"]
