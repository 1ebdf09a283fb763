"""Channel-pruning engine: groups from the graph, policies, physical pruning, MACs, reconstruction."""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from amc_mobile.errors import UserError
from amc_mobile.models import create_model, describe_model, list_models
from amc_mobile.models.bn import calibrate_bn
from amc_mobile.models.checkpoint import load_checkpoint, save_checkpoint
from amc_mobile.pruning import (
    ChannelPruner,
    PruningPolicy,
    find_groups,
    fine_grained_prune,
    list_criteria,
    policy_from_channels,
    pruned_description,
    round_channels,
    uniform_policy,
)
from amc_mobile.pruning.reconstruct import collect_grams, solve_weights

AMC_V1_50_FLOPS = [24, 48, 96, 80, 192, 200, 328, 352, 368, 360, 328, 400, 736, 752]
AMC_V1_50_TIME = [16, 48, 88, 80, 192, 168, 336, 360, 360, 352, 352, 368, 768, 680]


def smooth_images(n: int, chans: int, size: int, seed: int) -> torch.Tensor:
    """Image-like inputs: low-frequency noise with a per-image contrast (so features vary by image)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n, chans, 4, 4, generator=g)
    x = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return x * (0.5 + torch.rand(n, 1, 1, 1, generator=g)) + 0.1 * torch.randn(x.shape, generator=g)



def calibrated(name: str, width: float = 0.5, size: int = 16, seed: int = 0) -> nn.Module:
    """A random-weight model whose BatchNorm statistics match its inputs (healthy activations)."""
    torch.manual_seed(seed)
    model = create_model(name, width_mult=width, input_size=size)
    chans = model.arch_spec.in_chans
    images = torch.cat([smooth_images(48, chans, size, 100 + i) for i in range(2)])
    return calibrate_bn(model, images)


@pytest.fixture(scope="module")
def v1() -> nn.Module:
    return calibrated("mobilenet_v1_cifar", 0.5, 16)


@pytest.fixture(scope="module")
def v2() -> nn.Module:
    return calibrated("mobilenet_v2_cifar", 0.5, 16)


@pytest.fixture(scope="module")
def v2_pruner(v2: nn.Module) -> ChannelPruner:
    return ChannelPruner(v2, 16)


class _Calibrated(dict):
    """name -> :func:`calibrated` model (width 0.5, 16 px), built on first use."""

    def __missing__(self, name: str) -> nn.Module:
        self[name] = calibrated(name, 0.5, 16)
        return self[name]


# every registered small-image model (the ImageNet layouts are the same code at 224 px)
CIFAR_MODELS = [name for name in list_models() if name.endswith("_cifar")]


@pytest.fixture(scope="module")
def models(v1: nn.Module, v2: nn.Module) -> dict[str, nn.Module]:
    built = _Calibrated()
    built.update({"mobilenet_v1_cifar": v1, "mobilenet_v2_cifar": v2})
    return built


def random_keep(groups, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(1, g.width) for g in groups]


# ------------------------------------------------------------------------------------------ groups
@pytest.mark.parametrize("width", [0.5, 1.0])
def test_v1_groups_follow_the_architecture(width: float) -> None:
    model = create_model("mobilenet_v1_cifar", width_mult=width)
    groups = find_groups(model, 32)
    assert [g.name for g in groups] == ["conv1.0"] + [f"features.{i}.pw.0" for i in range(13)]
    assert [g.width for g in groups] == [int(c * width) for c in
                                         (32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)]
    for i, g in enumerate(groups):
        consumer = f"features.{i}.pw.0" if i < 13 else "classifier"
        assert g.consumers == (consumer,)
        assert g.followers == ((f"features.{i}.dw.0",) if i < 13 else ())  # dw follows its input
        assert g.producers == (g.name,)
    assert all("classifier" not in g.producers for g in groups)  # classes are never pruned


def test_v2_groups_tie_residual_channels() -> None:
    model = create_model("mobilenet_v2_cifar", width_mult=1.0)
    groups = find_groups(model, 32)
    assert len(groups) == 25  # stem, 16 expansions, 7 stage outputs, last 1x1 conv
    by_producer = {p: g for g in groups for p in g.producers}
    blocks = [m for m in model.features if hasattr(m, "use_res_connect")]
    names = {m: n for n, m in model.named_modules()}
    for prev, block in zip(blocks[:-1], blocks[1:], strict=True):
        proj = names[block.conv[-2]]
        if block.use_res_connect:  # x + conv(x): same keep-set as the previous block's output
            assert by_producer[proj] is by_producer[names[prev.conv[-2]]]
        else:
            assert by_producer[proj] is not by_producer[names[prev.conv[-2]]]
    stage24 = by_producer["features.2.conv.2"]
    assert stage24.width == 24 and stage24.producers == ("features.2.conv.2", "features.3.conv.2")
    assert stage24.consumers == ("features.3.conv.0.0", "features.4.conv.0.0")
    assert [g.width for g in groups if len(g.producers) > 1] == [24, 32, 64, 96, 160]
    assert groups[-1].consumers == ("classifier.1",)
    # every depthwise conv follows exactly one group; no depthwise conv is a producer/consumer
    dws = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert sorted(f for g in groups for f in g.followers) == sorted(dws)


def test_info_groups_lists_widths(capsys: pytest.CaptureFixture[str]) -> None:
    from amc_mobile.cli.common import run_app
    from amc_mobile.cli.main import app

    assert run_app(app, ["info", "--model", "mobilenet_v1", "--resolution", "64", "--groups", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [g["width"] for g in out["groups"]][:3] == [32, 64, 128]
    assert len(out["groups"]) == 14 and out["groups"][0]["name"] == "conv1.0"


def test_unsupported_models_fail_with_one_line_naming_the_layer() -> None:
    # torch-pruning 1.6's DependencyGraph turns both of these into invalid convs: we refuse them
    grouped = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=2),
                            nn.ReLU(), nn.Conv2d(8, 4, 1))
    with pytest.raises(UserError, match="layer '2'.*grouped convolution"):
        find_groups(grouped, 16)
    multiplier = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1, groups=8),
                               nn.ReLU(), nn.Conv2d(16, 4, 1))
    with pytest.raises(UserError, match="layer '2'.*grouped convolution"):
        find_groups(multiplier, 16)

    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.head = nn.Linear(5, 2)  # wrong in_features: the trace fails in this layer

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.conv(x).mean((2, 3)))

    with pytest.raises(UserError, match="layer 'head'") as info:
        find_groups(Broken(), 16)
    assert "\n" not in str(info.value)


def test_concatenated_channels_map_to_offsets() -> None:
    class Cat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 6, 1), nn.Conv2d(10, 5, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(torch.cat([self.a(x), self.b(x)], 1))

    model = Cat().eval()
    groups = find_groups(model, 8)
    assert [(g.name, g.width) for g in groups] == [("a", 4), ("b", 6)]
    assert [m.idxs for m in groups[1].members if m.role == "consumer"] == [(4, 5, 6, 7, 8, 9)]
    pruner = ChannelPruner(model, 8)
    pruned = pruner.prune([2, 3])
    kept_a, kept_b = pruner.keep_indices([2, 3])
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expect = F.conv2d(torch.cat([model.a(x)[:, kept_a], model.b(x)[:, kept_b]], 1),
                          model.c.weight[:, torch.cat([kept_a, kept_b + 4])], model.c.bias)
        assert torch.allclose(pruned(x), expect, atol=1e-6)


# ------------------------------------------------------------------------------------------ policies
def test_round_channels_follows_amc() -> None:
    assert round_channels(64, 0.75) == 48
    assert round_channels(64, 0.7) == 48  # 44.8 -> 45 -> up to a multiple of 8
    assert round_channels(64, 0.01) == 8  # never below the multiple
    assert round_channels(20, 0.95) == 20  # never above the full width
    assert round_channels(4, 0.5) == 4  # full width below the multiple: keep it all
    assert round_channels(100, 0.33, multiple=1) == 33
    for bad in (0.0, -0.1, 1.01):
        with pytest.raises(UserError, match="outside"):
            round_channels(64, bad)


def test_uniform_075_is_the_published_075_mobilenet() -> None:
    groups = find_groups(create_model("mobilenet_v1"), 64)
    assert uniform_policy(groups, 0.75).keep_channels == [24, 48, 96, 96, 192, 192] + [384] * 6 + [768, 768]


def test_policy_roundtrip_and_validation(tmp_path) -> None:
    groups = find_groups(create_model("mobilenet_v1_cifar", width_mult=0.5), 32)
    pol = uniform_policy(groups, 0.5, "mobilenet_v1_cifar", 32)
    path = pol.save(tmp_path / "p.json")
    data = json.loads(path.read_text())
    assert data["schema_version"] == 1 and data["group_names"][0] == "conv1.0"
    assert data["keep_ratios"][0] == 0.5 and data["multiple"] == 8
    loaded = PruningPolicy.load(path)
    assert loaded.keep_channels == pol.keep_channels
    loaded.validate(groups, "mobilenet_v1_cifar")

    with pytest.raises(UserError, match="'mobilenet_v1_cifar', not 'mobilenet_v2_cifar'"):
        loaded.validate(groups, "mobilenet_v2_cifar")
    with pytest.raises(UserError, match="14 prunable groups"):
        policy_from_channels(groups, [8, 8], "mobilenet_v1_cifar", 32)
    with pytest.raises(UserError, match="group 'features.12.pw.0': 600 channels is above its full width 512"):
        policy_from_channels(groups, [16] * 13 + [600], "mobilenet_v1_cifar", 32)
    ratios = {**data, "keep_ratios": [0.5] * 13 + [1.5]}
    del ratios["keep_channels"]
    with pytest.raises(UserError, match="group 'features.12.pw.0': keep ratio 1.5"):
        PruningPolicy.from_dict(ratios)
    with pytest.raises(UserError, match="unknown policy key"):
        PruningPolicy.from_dict({**data, "keep_chanels": []})
    other = find_groups(create_model("mobilenet_v2_cifar", width_mult=0.5), 32)
    with pytest.raises(UserError, match="groups"):
        loaded.validate(other)


# ------------------------------------------------------------------------------------------ MACs
@pytest.mark.parametrize(("keep", "macs_m"), [(AMC_V1_50_FLOPS, 293.9), (AMC_V1_50_TIME, 274.0)])
def test_amc_published_v1_policies_reproduce_macs(keep: list[int], macs_m: float) -> None:
    model = create_model("mobilenet_v1")
    groups = find_groups(model, 64)  # the groups do not depend on the resolution
    desc = pruned_description(describe_model(model, 224), groups, keep)
    assert round(desc.macs / 1e6, 1) == macs_m
    assert [s.out_channels for s in desc.layers if s.type == "conv"] == keep


def test_amc_50_flops_model_is_built_at_224() -> None:
    model = create_model("mobilenet_v1")
    pruner = ChannelPruner(model, 224)
    pruned = pruner.prune(AMC_V1_50_FLOPS)
    desc = describe_model(pruned, 224)  # one forward pass at 224
    assert round(desc.macs / 1e6, 1) == 293.9
    assert desc == pruner.describe(AMC_V1_50_FLOPS)


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_pruned_description_equals_the_built_model(name: str, models: dict[str, nn.Module]) -> None:
    model = models[name]
    pruner = ChannelPruner(model, 16)
    base = describe_model(model, 16)
    for seed in range(3):
        keep = random_keep(pruner.groups, seed)
        pruned = pruner.prune(keep)
        assert describe_model(pruned, 16) == pruned_description(base, pruner.groups, keep)


# ------------------------------------------------------------------------------------------ pruning
@pytest.mark.parametrize("name", ["mobilenet_v1_cifar", "mobilenet_v2_cifar"])
def test_pruned_model_is_smaller_runs_and_reloads(name: str, models: dict[str, nn.Module], tmp_path) -> None:
    model = models[name]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruner = ChannelPruner(model, 16)
    pol = uniform_policy(pruner.groups, 0.5, name, 16)
    pruned = pruner.prune(pol.keep_channels)
    # physically smaller: real conv widths, depthwise groups updated
    convs = [m for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.weight.shape[0] == m.out_channels for m in convs)
    assert all(m.groups in (1, m.in_channels) for m in convs)
    assert any(m.groups == m.in_channels < 96 and m.groups > 1 for m in convs)
    d0, d1 = describe_model(model, 16), describe_model(pruned, 16)
    assert d1.macs < 0.4 * d0.macs and d1.params < 0.5 * d0.params
    x = smooth_images(4, 3, 16, 7)
    with torch.no_grad():
        y = pruned(x)
    assert y.shape == (4, 10) and torch.isfinite(y).all()
    # the base model is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # saved as architecture + state_dict, reloadable without the original
    save_checkpoint(tmp_path / "p.pt", pruned)
    again, _ = load_checkpoint(tmp_path / "p.pt")
    with torch.no_grad():
        assert torch.allclose(again(x), y, atol=1e-6)


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_pruned_model_equals_the_original_with_removed_channels_masked(name: str,
                                                                      models: dict[str, nn.Module]) -> None:
    """Independent check of the physical removal: zeroing the removed channels at the input of
    every consuming layer of the ORIGINAL model gives exactly the pruned model's output."""
    model = models[name]
    pruner = ChannelPruner(model, 16)
    keep = random_keep(pruner.groups, 11)
    plans = pruner.plan(keep)
    modules = dict(model.named_modules())

    def mask_input(mod: nn.Module, inputs: tuple[torch.Tensor, ...], name: str) -> tuple[torch.Tensor]:
        x = inputs[0].clone()
        full = x.shape[1]
        gone = torch.ones(full, dtype=torch.bool)
        gone[plans[name].in_keep] = False
        x[:, gone] = 0
        return (x,)

    hooks = [modules[n].register_forward_pre_hook(lambda m, i, n=n: mask_input(m, i, n))
             for n in pruner.consumers if n in plans and plans[n].in_keep is not None]
    x = smooth_images(8, 3, 16, 5)
    try:
        with torch.no_grad():
            masked = model(x)
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        assert torch.allclose(pruner.prune(keep, reconstruct=False)(x), masked, atol=1e-5, rtol=1e-4)


def test_keep_everything_is_the_identity(v2: nn.Module, v2_pruner: ChannelPruner) -> None:
    full = v2_pruner.prune([g.width for g in v2_pruner.groups])
    x = smooth_images(4, 3, 16, 2)
    with torch.no_grad():
        assert torch.equal(full(x), v2(x))


def test_slice_backend_equals_torch_pruning_backend(v2: nn.Module, v2_pruner: ChannelPruner) -> None:
    keep = random_keep(v2_pruner.groups, 3)
    ours = v2_pruner.prune(keep)
    theirs = ChannelPruner(v2, 16, backend="torch_pruning").prune(keep)
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_l1_criterion_keeps_the_heaviest_input_channels() -> None:
    model = create_model("mobilenet_v1_cifar", width_mult=0.25, input_size=16)
    with torch.no_grad():  # make channels 3 and 7 of group 0 the heaviest inputs of its consumer
        model.features[0].pw[0].weight[:, [3, 7]] *= 100
    pruner = ChannelPruner(model, 16, criterion="l1")
    assert pruner.keep_indices([2] + [g.width for g in pruner.groups[1:]])[0].tolist() == [3, 7]


@pytest.mark.parametrize("criterion", list_criteria())
def test_every_criterion_prunes(criterion: str, v1: nn.Module) -> None:
    pruner = ChannelPruner(v1, 16, criterion=criterion)
    keep = uniform_policy(pruner.groups, 0.5).keep_channels
    kept = pruner.keep_indices(keep)
    assert [len(k) for k in kept] == keep and all(bool((k[1:] > k[:-1]).all()) for k in kept)
    assert pruner.prune(keep)(torch.zeros(1, 3, 16, 16)).shape == (1, 10)


def test_unknown_criterion_lists_valid_ones() -> None:
    with pytest.raises(UserError, match="valid criterions: .*l1"):
        ChannelPruner(create_model("mobilenet_v1_cifar", width_mult=0.25), 32, criterion="l3")


# ------------------------------------------------------------------------------------------ reconstruction
def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().pow(2).mean())


def test_reconstruction_lowers_held_out_output_error() -> None:
    """AMC's claim, per layer: on held-out images of the original model, every refitted consumer
    reproduces the original output better than plain channel selection; and end to end for a group."""
    model = calibrated("mobilenet_v1_cifar", 0.25, 16)
    calib, held = smooth_images(800, 3, 16, 11), smooth_images(200, 3, 16, 12)
    pruner = ChannelPruner(model, 16, calib, calib_batches=16, calib_batch_size=50, points_per_image=10)
    keep = uniform_policy(pruner.groups, 0.5).keep_channels
    modules = dict(model.named_modules())
    feats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: feats.__setitem__(n, (i[0], o)))
             for n in pruner.consumers]
    with torch.no_grad():
        ref = model(held)
    for h in hooks:
        h.remove()
    plain = dict(pruner.prune(keep, reconstruct=False).named_modules())
    fitted = dict(pruner.prune(keep, reconstruct=True).named_modules())
    checked = 0
    with torch.no_grad():
        for name, plan in pruner.plan(keep).items():
            if name not in pruner.consumers or plan.in_keep is None:
                continue
            x, y = feats[name]
            x = x[:, plan.in_keep]
            y = y if plan.out_keep is None else y[:, plan.out_keep]
            assert _mse(fitted[name](x), y) < 0.9 * _mse(plain[name](x), y), name
            checked += 1
    assert checked == 13
    # end to end, pruning the last group only: the logits get closer to the original model's
    last = [g.width for g in pruner.groups[:-1]] + [keep[-1]]
    with torch.no_grad():
        err_plain = _mse(pruner.prune(last, reconstruct=False)(held), ref)
        err_fitted = _mse(pruner.prune(last, reconstruct=True)(held), ref)
    assert err_fitted < 0.7 * err_plain


def test_kxk_conv_reconstruction_via_im2col() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 12, 3, padding=1, stride=2, bias=False), nn.BatchNorm2d(12), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 5))
    model.train()
    with torch.no_grad():
        model(smooth_images(64, 3, 16, 0))
    model.eval()
    pruner = ChannelPruner(model, 16, smooth_images(400, 3, 16, 1), calib_batches=8, points_per_image=20)
    g0 = pruner.groups[0]
    assert g0.name == "0" and g0.consumers == ("3",)  # a 3x3 conv consumes the pruned channels
    held = smooth_images(100, 3, 16, 2)
    feats = model[:3](held)
    ref = model[3](feats)
    keep = [8, 12]
    kept = pruner.keep_indices(keep)[0]
    with torch.no_grad():
        plain = pruner.prune(keep, reconstruct=False)[3](feats[:, kept])
        fitted = pruner.prune(keep, reconstruct=True)[3](feats[:, kept])
    assert _mse(fitted, ref) < 0.7 * _mse(plain, ref)
    # keeping every channel, the least-squares solution is the original weight
    full = pruner.prune([16, 12], reconstruct=True)
    assert torch.allclose(full[3].weight, model[3].weight, atol=1e-3 * float(model[3].weight.abs().max()))


def test_gram_solution_matches_direct_least_squares() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 4, 3, padding=1, bias=False)
    model = nn.Sequential(conv)
    x = torch.randn(30, 6, 8, 8)
    stats = collect_grams(model, ["0"], x, batch_size=10, batches=3, points_per_image=64, seed=5)
    keep_in = torch.tensor([0, 2, 5])
    w = solve_weights(stats["0"], keep_in, None).double()
    cols = F.unfold(x, 3, padding=1).transpose(1, 2).reshape(-1, 54).double()  # every position
    y = cols @ conv.weight.detach().reshape(4, -1).double().T
    sel = cols.reshape(-1, 6, 9)[:, keep_in].reshape(-1, 27)
    direct = torch.linalg.lstsq(sel, y).solution.T
    # the Gram matrix is built from 64 sampled points per image (with replacement), not every one;
    # both solutions must explain y about equally well
    res_direct = _mse(sel @ direct.T, y)
    res_gram = _mse(sel @ w.T, y)
    assert res_gram <= 1.05 * res_direct


# ------------------------------------------------------------------------------------------ fine-grained
@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_fine_grained_hits_the_requested_sparsity(sparsity: float) -> None:
    model = create_model("mobilenet_v1_cifar", width_mult=0.25)
    pruned, report = fine_grained_prune(model, sparsity)
    for layer in report.layers:
        assert abs(layer.sparsity - sparsity) <= 1.0 / layer.numel + 1e-9
    assert abs(report.sparsity - sparsity) < 1e-3
    assert describe_model(pruned, 32).macs == describe_model(model, 32).macs  # shapes unchanged
    assert report.csr_bytes < report.dense_bytes if sparsity > 0.5 else report.bitmask_bytes < report.dense_bytes
    assert all(float(m.weight.abs().sum()) > 0 for m in model.modules() if isinstance(m, nn.Conv2d))
