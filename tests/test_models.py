"""Model registry, shapes, MACs/params, torchvision key compatibility, self-description, zoo files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from amc_mobile.models import count_macs_params, create_model, describe_model, get_entry, list_models
from amc_mobile.models.checkpoint import list_zoo, load_checkpoint, save_checkpoint

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("name", list_models())
def test_every_model_runs_with_requested_channels_and_classes(name: str) -> None:
    entry = get_entry(name)
    size = min(entry.default_input_size, 64)
    model = create_model(name, num_classes=7, in_chans=1, width_mult=0.25, input_size=size).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, size, size))
    assert out.shape == (2, 7)
    assert model.arch_spec.in_chans == 1 and model.arch_spec.num_classes == 7
    assert model.input_size == size


@pytest.mark.parametrize("name", list_models())
def test_registry_defaults_are_honoured(name: str) -> None:
    entry = get_entry(name)
    model = create_model(name, width_mult=0.25)
    assert model.input_size == entry.default_input_size
    assert model.arch_spec.num_classes == entry.default_num_classes
    desc = describe_model(model)
    assert desc.in_chans == entry.default_in_chans
    assert desc.layers[-1].out_channels == entry.default_num_classes


@pytest.mark.parametrize(("name", "macs_m", "params_m"), [
    ("mobilenet_v1", 568.7, 4.23),  # Howard et al. 2017, Table 1/8: 569M mult-adds, 4.2M params
    ("mobilenet_v2", 300.8, 3.50),  # Sandler et al. 2018, Table 4: 300M, 3.4M (torchvision: 3.50M)
])
def test_imagenet_macs_and_params_match_the_papers(name: str, macs_m: float, params_m: float) -> None:
    macs, params = count_macs_params(create_model(name), 224)
    assert round(macs / 1e6, 1) == macs_m
    assert round(params / 1e6, 2) == params_m


def _torchvision_v2_layout() -> dict[str, list[int]]:
    doc = json.loads((DATA / "torchvision_mobilenet_v2_state_dict.json").read_text())
    assert doc["num_entries"] == len(doc["state_dict"]) == 314
    return {e["key"]: e["shape"] for e in doc["state_dict"]}


def test_mobilenet_v2_state_dict_matches_torchvision_keys_and_shapes() -> None:
    ref = _torchvision_v2_layout()
    ours = {k: list(v.shape) for k, v in create_model("mobilenet_v2").state_dict().items()}
    assert sorted(set(ref) - set(ours)) == [] and sorted(set(ours) - set(ref)) == []
    mismatched = {k: (ours[k], ref[k]) for k in ref if ours[k] != ref[k]}
    assert mismatched == {}


def test_torchvision_layout_checkpoint_loads_strictly(tmp_path: Path) -> None:
    """A state_dict saved with torch.save in torchvision's layout loads with strict=True."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in _torchvision_v2_layout().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(3, dtype=torch.long)
        else:
            state[key] = torch.randn(shape, generator=gen)
    path = tmp_path / "mobilenet_v2_tv.pth"
    torch.save(state, path)
    model = create_model("mobilenet_v2")
    model.load_state_dict(torch.load(path, weights_only=True), strict=True)
    assert torch.equal(model.classifier[1].weight, state["classifier.1.weight"])
    assert torch.equal(model.features[17].conv[1][0].weight, state["features.17.conv.1.0.weight"])


def test_mobilenet_v1_self_description_order_types_and_strides() -> None:
    desc = describe_model(create_model("mobilenet_v1"))
    types = [s.type for s in desc.layers]
    assert types == ["conv"] + ["dwconv", "conv"] * 13 + ["linear"]
    assert desc.layers[0].stride == 2 and desc.layers[0].output_hw == (112, 112)
    dw = [s for s in desc.layers if s.type == "dwconv"]
    stride2_blocks = [i + 1 for i, s in enumerate(dw) if s.stride == 2]
    assert stride2_blocks == [2, 4, 6, 12]
    assert [s.out_channels for s in desc.layers if s.type == "conv"][1:] == [
        64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    assert desc.layers[-2].output_hw == (7, 7)
    assert [s.name for s in desc.layers[:3]] == ["conv1.0", "features.0.dw.0", "features.0.pw.0"]


def test_mobilenet_v1_cifar_keeps_resolution_in_first_conv() -> None:
    desc = describe_model(create_model("mobilenet_v1_cifar", in_chans=1, width_mult=0.5, input_size=28))
    assert desc.layers[0].stride == 1 and desc.layers[0].output_hw == (28, 28)
    assert desc.in_chans == 1 and desc.input_size == 28


def test_mobilenet_v2_residual_blocks_and_description() -> None:
    model = create_model("mobilenet_v2")
    residual = [i for i, block in enumerate(model.features) if getattr(block, "use_res_connect", False)]
    assert residual == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]
    desc = describe_model(model)
    # stem, 1 block without expansion (dw + project), 16 blocks (expand + dw + project), last conv, fc
    assert len(desc.layers) == 1 + 2 + 16 * 3 + 1 + 1
    assert sum(s.type == "dwconv" for s in desc.layers) == 17
    assert desc.layers[-1].type == "linear" and desc.layers[-1].in_channels == 1280


def test_checkpoint_round_trip_half_precision(tmp_path: Path) -> None:
    model = create_model("mobilenet_v1_cifar", num_classes=4, in_chans=1, width_mult=0.25, input_size=28).eval()
    path = save_checkpoint(tmp_path / "m.pt", model, half=True, data={"dataset": "fashion-mnist"})
    loaded, meta = load_checkpoint(path)
    assert meta["arch"]["input_size"] == 28 and meta["arch"]["in_chans"] == 1
    assert meta["data"]["dataset"] == "fashion-mnist"
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-2)
    assert loaded.classifier.weight.dtype == torch.float32


@pytest.mark.parametrize("name", list_zoo())
def test_shipped_teachers_load_with_their_data_description(name: str) -> None:
    model, meta = load_checkpoint(f"zoo:{name}")
    assert meta["arch"]["input_size"] == 28 and meta["arch"]["in_chans"] == 1
    assert meta["data"]["dataset"] == "fashion-mnist" and len(meta["data"]["classes"]) == 10
    assert "train_state" not in meta  # shipped without optimizer state
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


# ------------------------------------------------------------------------ the architecture record
@pytest.mark.parametrize("name", list_models())
def test_architecture_record_is_typed_frozen_and_reloads_from_its_json_form(name: str, tmp_path: Path) -> None:
    import dataclasses

    from amc_mobile.models import ArchSpec, get_arch

    model = create_model(name, num_classes=5, in_chans=1, width_mult=0.25, input_size=16)
    spec = get_arch(model)
    assert spec == ArchSpec(name, num_classes=5, in_chans=1, width_mult=0.25, input_size=16)
    assert spec.input_shape == (1, 1, 16, 16)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.num_classes = 3  # type: ignore[misc]
    path = save_checkpoint(tmp_path / "m.pt", model)
    # on disk: the same JSON keys as before the typed record (old readers and old files keep working)
    raw = torch.load(path, weights_only=True)["arch"]
    assert set(raw) == {"name", "num_classes", "in_chans", "width_mult", "input_size", "shapes"}
    loaded, _ = load_checkpoint(path)
    assert get_arch(loaded) == spec and loaded.input_size == 16


def test_architecture_record_keeps_removed_units_and_rejects_bad_data() -> None:
    from amc_mobile.errors import UserError
    from amc_mobile.models import ArchSpec

    spec = ArchSpec("resnet18_cifar", 10, 3, 0.5, 32, removed=("layer3.1", "layer4.1"))
    data = spec.to_dict()
    assert data["removed"] == ["layer3.1", "layer4.1"]
    assert json.loads(json.dumps(data)) == data and ArchSpec.from_dict(data) == spec
    assert "removed" not in spec.replace(removed=()).to_dict()
    with pytest.raises(UserError, match=r"unknown key\(s\) in ckpt: colour; valid keys: .*in_chans") as info:
        ArchSpec.from_dict({**data, "colour": "red"}, "ckpt")
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="num_classes must be a positive integer"):
        ArchSpec.from_dict({**data, "num_classes": "ten"})
    with pytest.raises(UserError, match="missing in_chans"):
        ArchSpec.from_dict({"name": "x", "num_classes": 3})
