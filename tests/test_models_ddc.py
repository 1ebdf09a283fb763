"""DDC's models (VGG-11, ResNet-18) and removable units found from the graph on every registered model."""

from __future__ import annotations

import pytest
import torch

from amc_mobile.errors import UserError
from amc_mobile.models import count_macs_params, create_model, list_models
from amc_mobile.models.bn import calibrate_bn


def _small(name: str) -> torch.nn.Module:
    """Registered model at a size a test can afford: CIFAR layouts at 28 px / 1 channel (Fashion-MNIST),
    ImageNet layouts at their own 224 px (width 0.25)."""
    torch.manual_seed(0)
    if "cifar" in name:
        return create_model(name, num_classes=10, in_chans=1, width_mult=0.25, input_size=28)
    return create_model(name, num_classes=10, width_mult=0.25, input_size=224)


def test_imagenet_layouts_count_like_the_papers() -> None:
    # torchvision's ResNet-18: 11.69M params, 1.82G MACs at 224 px
    macs, params = count_macs_params(create_model("resnet18"))
    assert params == 11_689_512 and abs(macs / 1.814e9 - 1) < 0.01
    # VGG-11 with BN and no conv biases (torchvision vgg11_bn has conv biases: 132,868,840)
    macs, params = count_macs_params(create_model("vgg11"))
    assert params == 132_868_840 - 2752 and abs(macs / 7.6e9 - 1) < 0.01


@pytest.mark.parametrize("name", ["vgg11_cifar", "resnet18_cifar"])
@pytest.mark.parametrize("size", [28, 32])
def test_cifar_layouts_take_28_and_32_px_and_have_graph_groups(name: str, size: int) -> None:
    from amc_mobile.pruning.groups import find_groups

    model = create_model(name, num_classes=10, in_chans=1, width_mult=0.25, input_size=size).eval()
    assert model(torch.randn(2, 1, size, size)).shape == (2, 10)
    groups = find_groups(model, size)
    assert groups and all(g.width > 0 for g in groups)
    if name == "resnet18_cifar":  # residual additions tie each stage's output channels into one group
        stage1 = next(g for g in groups if "layer1.0.conv2" in g.producers)
        assert {"conv1", "layer1.0.conv2", "layer1.1.conv2"} <= set(stage1.producers)


EXPECTED = {  # what the graph must yield (the test checks discovery, it does not feed it)
    # V2 at width 0.25: the first block (t=1) maps 8 -> 8 channels at stride 1, so it gains an identity
    # shortcut and is removable too (10 at width 1.0: 32 -> 16)
    "mobilenet_v1": 8, "mobilenet_v1_cifar": 8, "mobilenet_v2": 11, "mobilenet_v2_cifar": 11,
    "resnet18": 5, "resnet18_cifar": 5,
    "vgg11": 4, "vgg11_cifar": 4,
}


@pytest.mark.parametrize("name", list_models())
def test_removable_units_are_shape_preserving_and_removal_keeps_the_network_valid(name: str) -> None:
    from amc_mobile.search.ddc import removable_units, remove_units, trunk_elements

    model = _small(name).eval()
    size = model.input_size
    elements = trunk_elements(model)
    units = [e for e in elements if e.removable]
    assert units, name
    if name in EXPECTED:
        assert len(units) == EXPECTED[name], [u.name for u in units]
    for u in units:
        assert u.input_hw == u.output_hw and u.in_channels == u.out_channels and u.stride == 1
    assert [e.name for e in removable_units(model)] == [u.name for u in units]
    x = torch.randn(1, model.arch_spec.in_chans, size, size)
    smaller = remove_units(model, [u.name for u in units])
    assert smaller(x).shape == model(x).shape
    _, p0 = count_macs_params(model)
    _, p1 = count_macs_params(smaller)
    assert p1 == p0 - sum(u.params for u in units)
    assert smaller.arch_spec.removed == tuple(u.name for u in units)
    assert model.arch_spec.removed == ()  # the original is untouched


def test_units_by_kind() -> None:
    from amc_mobile.search.ddc import removable_units

    v2 = removable_units(_small("mobilenet_v2_cifar"))
    assert {u.kind for u in v2} == {"InvertedResidual"} and all(u.skip for u in v2)
    v1 = removable_units(_small("mobilenet_v1_cifar"))
    assert {u.kind for u in v1} == {"DepthwiseSeparable"} and not any(u.skip for u in v1)
    rn = removable_units(_small("resnet18_cifar"))
    assert [u.name for u in rn] == ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    vgg = removable_units(_small("vgg11_cifar"))
    assert {u.kind for u in vgg} == {"ConvBNAct"} and all(u.in_channels == u.out_channels for u in vgg)


def test_removed_model_checkpoint_onnx_and_bad_names(tmp_path) -> None:
    import onnxruntime as ort

    from amc_mobile.export import export_onnx
    from amc_mobile.models.checkpoint import load_checkpoint, save_checkpoint
    from amc_mobile.search.ddc import remove_units

    model = calibrate_bn(_small("resnet18_cifar"), (16, 1, 28, 28))
    smaller = remove_units(model, ["layer3.1", "layer1.0"]).eval()
    assert smaller.arch_spec.removed == ("layer1.0", "layer3.1")  # in module order
    save_checkpoint(tmp_path / "s.pt", smaller)
    back, _ = load_checkpoint(tmp_path / "s.pt")
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(back(x), smaller(x))
    assert isinstance(back.layer1[0], torch.nn.Identity)
    report = export_onnx(back, tmp_path / "s.onnx", (1, 1, 28, 28))
    assert report.max_abs_error < 1e-4
    sess = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x[:1].numpy()})[0]
    assert abs(out - back(x[:1]).detach().numpy()).max() < 1e-4
    full_nodes = _conv_nodes(model, tmp_path / "full.onnx")
    assert _conv_nodes(back, tmp_path / "s2.onnx") == full_nodes - 4  # two blocks of two convs are gone
    with pytest.raises(UserError, match="not removable: layer2.0"):
        remove_units(model, ["layer2.0"])


def _conv_nodes(model: torch.nn.Module, path) -> int:  # noqa: ANN001
    import onnx

    from amc_mobile.export import export_onnx

    export_onnx(model, path, (1, 1, 28, 28))
    return sum(n.op_type == "Conv" for n in onnx.load(str(path)).graph.node)


def test_channel_pruning_after_removal_reloads(tmp_path) -> None:
    """DDC's second stage: a block-removed model is channel-pruned and still saves/loads."""
    from amc_mobile.models.checkpoint import load_checkpoint, save_checkpoint
    from amc_mobile.pruning import ChannelPruner, uniform_policy
    from amc_mobile.search.ddc import remove_units

    model = calibrate_bn(_small("resnet18_cifar"), (16, 1, 28, 28))
    smaller = remove_units(model, ["layer1.1", "layer4.1"])
    pruner = ChannelPruner(smaller, 28)
    pruned = pruner.prune(uniform_policy(pruner.groups, 0.5).keep_channels)
    save_checkpoint(tmp_path / "p.pt", pruned)
    back, _ = load_checkpoint(tmp_path / "p.pt")
    x = torch.randn(2, 1, 28, 28)
    assert torch.allclose(back(x), pruned.eval()(x), atol=1e-5)
    assert count_macs_params(back)[1] < count_macs_params(smaller)[1]


@pytest.mark.slow
def test_removed_model_exports_to_tflite(tmp_path) -> None:
    """LiteRT runs the block-removed model like torch (the existing exporter, ~30 s)."""
    pytest.importorskip("litert_torch")
    from amc_mobile.export.tflite import export_tflite
    from amc_mobile.search.ddc import remove_units

    model = calibrate_bn(_small("resnet18_cifar"), (16, 1, 28, 28))
    report = export_tflite(remove_units(model, ["layer1.0", "layer3.1"]).eval(), tmp_path / "r.tflite", (1, 1, 28, 28))
    assert report.max_abs_error < 1e-3 and report.size_bytes > 0
