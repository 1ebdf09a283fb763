"""Units, resumable profiling with exact row accounting, interpolated prediction, bad tables."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from amc_mobile.errors import UserError
from amc_mobile.latency.lut import LatencyTable, axis_points, plan_grid, profile_table
from amc_mobile.latency.units import build_unit, residual_layers, units_of
from amc_mobile.models import create_model, describe_model


def _tiny():
    return create_model("mobilenet_v1_cifar", width_mult=0.25, input_size=8, in_chans=1)


@pytest.mark.parametrize("name,n_units", [("mobilenet_v1", 15), ("mobilenet_v2", 36)])
def test_units_cover_every_layer_once(name: str, n_units: int) -> None:
    model = create_model(name)
    desc = describe_model(model)
    units = units_of(desc, residual_layers(model))
    assert len(units) == n_units
    assert [n for u in units for n in u.layers] == [s.name for s in desc.layers]
    assert units[0].cin_fixed and units[-1].cout_fixed and units[-1].kind == "pool+linear"
    if name == "mobilenet_v2":
        assert sum(u.kind == "dw+conv+res" for u in units) == 10


def test_unit_modules_have_the_slot_shapes() -> None:
    for slot, cin, cout in [("dw+conv|k3|s2|16x16", 24, 40), ("conv|k1|s1|8x8", 16, 96),
                            ("dw+conv+res|k3|s1|8x8", 48, 16), ("pool+linear|k1|s1|4x4", 64, 10)]:
        mod, shape = build_unit(slot, cin, cout)
        y = mod(torch.randn(*shape))
        assert y.shape[1] == cout
        assert shape[1] == cin


def test_axis_points_are_sparse_and_keep_the_ends() -> None:
    pts, full = axis_points(1024, 8, 5)
    assert full == 128 and len(pts) == 5 and pts[0] == 8 and pts[-1] == 1024
    assert all(p % 8 == 0 for p in pts)
    assert axis_points(3, 8, 5) == ([1, 3], 1)
    assert axis_points(1000, 8, 5, fixed=True) == ([1000], 1)


def test_profile_resumes_after_interruption_with_exact_row_accounting(tmp_path, fake_profile) -> None:
    prof, model, out = fake_profile, _tiny(), tmp_path / "t.csv"
    total = sum(len(g.cin) * len(g.cout) for g in plan_grid(units_of(describe_model(model), []), 8, 3))
    first = profile_table(prof, model, out, granularity=8, points=3, max_rows=7, batch_rows=3, calibration=None)
    assert first.new_rows == 7
    head = pd.read_csv(out)
    assert len(head) == 7

    # a kill in the middle of the next batch: rows of finished batches survive, nothing else
    calls = {"n": 0}

    def boom(done: int, total_: int) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # after two more batches
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        profile_table(prof, model, out, granularity=8, points=3, batch_rows=3, progress=boom, calibration=None)
    assert len(pd.read_csv(out)) == 7 + 6
    with open(out, "a") as f:  # a partial line, as a kill during a write leaves it
        f.write("dw+conv|k3|s1|8x8,8,")

    rest = profile_table(prof, model, out, granularity=8, points=3, batch_rows=3, calibration=None)
    df = pd.read_csv(out)
    assert rest.new_rows == total - 13 and rest.rows == len(df) == total
    assert not df.duplicated(["slot", "cin", "cout"]).any()
    pd.testing.assert_frame_equal(df.head(7), head)
    again = profile_table(prof, model, out, granularity=8, points=3, calibration=None)
    assert again.new_rows == 0
    record = json.loads(json.dumps(again.to_dict()))  # the record benches write as JSON
    assert (record["rows"], record["grid_points"], record["path"]) == (total, total, str(out))


def test_resume_with_another_model_is_one_line(tmp_path, fake_profile) -> None:
    out = tmp_path / "t.csv"
    profile_table(fake_profile, _tiny(), out, points=2, max_rows=2)
    other = create_model("mobilenet_v1_cifar", width_mult=0.25, input_size=16, in_chans=1)
    with pytest.raises(UserError, match="different model"):
        profile_table(fake_profile, other, out, points=2)


def _synthetic_table(tmp_path, profile, f) -> tuple[LatencyTable, torch.nn.Module]:
    """Profile with the fake backend, then overwrite ratios with ``f(slot, cin, cout)``."""
    model, out = _tiny(), tmp_path / "syn.csv"
    profile_table(profile, model, out, points=3, calibration=None)
    df = pd.read_csv(out)
    df["ratio"] = [f(s, a, b) for s, a, b in zip(df["slot"], df["cin"], df["cout"], strict=True)]
    df["ref_ms"], df["overhead_ms"] = 2.0, 0.0
    df.to_csv(out, index=False)
    return LatencyTable.load(out), model


def test_prediction_interpolates_between_grid_points(tmp_path, fake_profile) -> None:
    """A bilinear function of (cin, cout) - like a MAC count - is recovered exactly off the grid."""
    table, model = _synthetic_table(tmp_path, fake_profile, lambda s, a, b: 0.5 + 0.01 * a + 0.02 * b + 0.001 * a * b)
    from amc_mobile.pruning import find_groups, pruned_description

    desc = describe_model(model)
    groups = find_groups(model, desc.input_size)
    keep = [max(1, (g.width * 5) // 7) for g in groups]  # off-grid widths
    pdesc = pruned_description(desc, groups, keep)
    units = units_of(pdesc, table.residual)
    expect = sum(0.5 + 0.01 * u.cin + 0.02 * u.cout + 0.001 * u.cin * u.cout for u in units) * 2.0
    assert table.predict(pdesc) == pytest.approx(expect, rel=1e-9)
    assert table.predict(pdesc) < table.predict(desc)


def test_prediction_rejects_another_model_or_resolution(tmp_path, fake_profile) -> None:
    table, _ = _synthetic_table(tmp_path, fake_profile, lambda s, a, b: 1.0)
    with pytest.raises(UserError, match="px"):
        table.predict(describe_model(_tiny(), 16))
    with pytest.raises(UserError, match="different layers"):
        table.predict(describe_model(create_model("mobilenet_v2_cifar", width_mult=0.25, input_size=8, in_chans=1)))


def test_corrupt_table_is_one_line(tmp_path, fake_profile) -> None:
    table, _ = _synthetic_table(tmp_path, fake_profile, lambda s, a, b: 1.0)
    Path(table.path).with_name("syn.meta.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt"):
        LatencyTable.load(table.path)


def test_meta_records_device_and_protocol(tmp_path, fake_profile) -> None:
    out = tmp_path / "m.csv"
    profile_table(fake_profile, _tiny(), out, points=2, max_rows=1)
    meta = json.loads(out.with_name("m.meta.json").read_text())
    assert meta["device"]["backend"] == "fake-test" and meta["protocol"]["repeats"] == 2
    assert meta["model"]["name"] == "mobilenet_v1_cifar" and meta["model"]["input_size"] == 8
    assert meta["created"]


def test_table_predicts_every_block_removed_model(tmp_path, fake_profile) -> None:
    """DDC's students: dropping VGG-11's last convs leaves its classifier on a 3x3 map (a slot the
    teacher never runs); the grid measures it, so every removal set is predicted, each one faster."""
    import itertools

    from amc_mobile.search.ddc.units import removable_units, remove_units

    model = create_model("vgg11_cifar", width_mult=0.125, in_chans=1, input_size=28)
    out = tmp_path / "vgg.csv"
    profile_table(fake_profile, model, out, points=2, calibration=None)
    table = LatencyTable.load(out)
    names = [u.name for u in removable_units(model, 28)]
    assert len(names) == 4
    full = table.predict(describe_model(model, 28))
    slots = set()
    for k in range(1, len(names) + 1):
        for gone in itertools.combinations(names, k):
            desc = describe_model(remove_units(model, gone), 28)
            slots.update(u.slot for u in table.units(desc))
            assert 0 < table.predict(desc) < full
    assert "pool+linear|k1|s1|3x3" in slots  # the classifier after the last two convs were dropped


def test_units_timed_in_another_layout_are_neither_resumed_nor_trusted(tmp_path, fake_profile) -> None:
    """A table whose units were timed NCHW (before TFLite units went NHWC) is not resumed in the other
    layout, and a backend that times units NHWC treats it as measured on another setup (validate/adapt)."""
    from amc_mobile.latency import load_profile
    from amc_mobile.latency.store import fingerprint_differences
    from amc_mobile.latency.table import meta_path

    out = tmp_path / "t.csv"
    profile_table(fake_profile, _tiny(), out, points=2, max_rows=2)
    meta = json.loads(meta_path(out).read_text())
    assert meta["unit_layout"] == "nchw"
    meta["unit_layout"] = "nhwc"
    meta_path(out).write_text(json.dumps(meta))
    with pytest.raises(UserError, match="unit_layout nhwc != nchw"):
        profile_table(fake_profile, _tiny(), out, points=2)
    del meta["unit_layout"]  # a table from before the field: NCHW units, resumable as such
    meta_path(out).write_text(json.dumps(meta))
    profile_table(fake_profile, _tiny(), out, points=2, calibration=None)
    table = LatencyTable.load(out)
    assert fingerprint_differences(table, table.identity, fake_profile) == []
    assert "unit_layout nchw != nhwc" in fingerprint_differences(table, table.identity, load_profile("host-tflite"))
