"""The harness end to end against the loopback stand-in: real adb-shell client, real LiteRT runs.

Each injected fault has a test: connection dropped mid-push / mid-run, slow replies, truncated or
malformed benchmark output, thermal status high; plus quoting (shell metacharacters in model names),
batch mode (resumable, keeps finished rows) and the ``android`` latency backend.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from adb_shell.auth.keygen import keygen

from android_harness.batch import run_batch
from android_harness.loopback import LoopbackAdbDevice
from android_harness.runner import BenchmarkRunner, RunnerConfig, ThermalError
from android_harness.transport import AdbConfig, AdbError, AdbTransport


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny conv model converted once (litert-torch), an adb key, a placeholder benchmark_model."""
    import litert_torch
    import torch

    d = tmp_path_factory.mktemp("android-assets")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    litert_torch.convert(model, (torch.randn(1, 3, 16, 16),)).export(str(d / "tiny.tflite"))
    keygen(str(d / "adbkey"))
    (d / "benchmark_model").write_bytes(b"\x7fELF placeholder benchmark_model\n")
    return {"model": d / "tiny.tflite", "key": d / "adbkey", "binary": d / "benchmark_model", "dir": d}


@pytest.fixture()
def device(tmp_path: Path):  # type: ignore[no-untyped-def]
    with LoopbackAdbDevice(tmp_path / "sandbox", faults=None) as dev:
        dev.faults.sleep_scale = 0.0
        yield dev


def make_runner(dev: LoopbackAdbDevice, assets: dict[str, Path], read_timeout_s: float = 10.0, retries: int = 3,
                **runner_kw: object) -> BenchmarkRunner:
    cfg = AdbConfig(address=dev.address, key_path=str(assets["key"]), connect_timeout_s=3, auth_timeout_s=3,
                    read_timeout_s=read_timeout_s, retries=retries, backoff_s=0.05)
    kw = {"cooldown_s": 0.01, "max_cooldown_s": 5.0, "run_timeout_s": 30.0, **runner_kw}
    return BenchmarkRunner(AdbTransport(cfg), RunnerConfig(binary=str(assets["binary"]), **kw))  # type: ignore[arg-type]


def test_facts_and_big_core_pinning(device: LoopbackAdbDevice, assets: dict[str, Path]) -> None:
    r = make_runner(device, assets)
    facts = r.facts()
    assert (facts.model, facts.android_version, facts.soc) == ("Pixel", "10", "Qualcomm Technologies, Inc MSM8996pro")
    assert facts.fingerprint.startswith("google/sailfish/sailfish:10/")
    assert facts.cpu_max_freq_khz == (1593600, 1593600, 2150400, 2150400)
    assert facts.big_core_mask == "c"
    assert facts.thermal is not None and facts.thermal.status == 0
    rec = r.run(assets["model"], 2, 7)
    out = rec.parsed[0]
    assert out.inference is not None and out.inference.count == 7 and out.warmup is not None
    assert out.warmup.count == 2                                         # exact counts: --min_secs=0
    assert 0 < out.inference_avg_us < 1e6                                # a real measured number
    assert device.last_affinity == 0xC                                   # taskset c: the two big cores
    assert "--min_secs=0" in rec.command and "--warmup_min_secs=0" in rec.command
    assert rec.thermal_before is not None and rec.thermal_after is not None
    assert len(rec.thermal_after.cur_freq_khz) == 4


SD855_MAX_KHZ = (1785600,) * 4 + (2419200,) * 3 + (2841600,)  # 1 prime + 3 big + 4 little (1+3+4)


@pytest.mark.parametrize(("threads", "mask"), [(1, "80"), (2, "f0"), (4, "f0"), (8, "ff")])
def test_big_cores_are_whole_top_clusters_enough_for_the_threads(tmp_path: Path, assets: dict[str, Path],
                                                                 threads: int, mask: str) -> None:
    with LoopbackAdbDevice(tmp_path / "sb", cpu_max_khz=SD855_MAX_KHZ) as dev:
        r = make_runner(dev, assets, threads=threads)
        assert r.core_mask == mask
        r.run(assets["model"], 1, 2)
        assert dev.last_affinity == int(mask, 16)  # what taskset really pinned on the device


def test_threads_beyond_the_core_mask_warn(device: LoopbackAdbDevice, assets: dict[str, Path],
                                           caplog: pytest.LogCaptureFixture) -> None:
    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "android_harness.runner"]

    with caplog.at_level("WARNING", logger="android_harness.runner"):
        assert make_runner(device, assets, threads=4, core_mask="c").core_mask == "c"
    assert any("4 threads but core mask c allows only 2" in m for m in warnings())
    caplog.clear()
    with caplog.at_level("WARNING", logger="android_harness.runner"):
        assert make_runner(device, assets, threads=2).core_mask == "c"
    assert not warnings()


def test_op_profiling_table_comes_back_parsed(device: LoopbackAdbDevice, assets: dict[str, Path]) -> None:
    rec = make_runner(device, assets, op_profiling=True).run(assets["model"], 1, 3)
    assert "--enable_op_profiling=true" in rec.command
    ops = rec.parsed[0].ops
    assert ops and all(op.node_type and op.times_called == 1 for op in ops)


def test_binary_pushed_once_and_reused_by_hash(device: LoopbackAdbDevice, assets: dict[str, Path]) -> None:
    make_runner(device, assets).run(assets["model"], 1, 2)
    pushes = list(device.pushes)
    assert sum(p.endswith("/benchmark_model") for p in pushes) == 1
    make_runner(device, assets).run(assets["model"], 1, 2)  # new session, same files: no push
    assert device.pushes == pushes


@pytest.mark.parametrize("name", ["a;touch PWNED;.tflite", "$(touch PWNED2).tflite", "`touch PWNED3`'.tflite"])
def test_model_names_cannot_run_commands(device: LoopbackAdbDevice, assets: dict[str, Path],
                                         tmp_path: Path, name: str) -> None:
    local = tmp_path / name
    shutil.copy(assets["model"], local)
    r = make_runner(device, assets)
    rec = r.run(local, 1, 3)
    assert rec.parsed[0].inference is not None
    rows = run_batch(r, [("x", local)], 1, 3)
    assert rows[0].thermal_before == 0
    planted = [p for p in device.fs.root.rglob("PWNED*")]
    assert planted == []


def test_drop_mid_push_is_retried_and_hash_checked(device: LoopbackAdbDevice, assets: dict[str, Path]) -> None:
    device.faults.drop_push = 1
    r = make_runner(device, assets)
    rec = r.run(assets["model"], 1, 3)
    assert rec.parsed and device.faults.drop_push == 0 and r.t.reconnects >= 1
    remote = device.fs.host(r.push_model(assets["model"]))
    assert remote.read_bytes() == assets["model"].read_bytes()


def test_drop_mid_run_reconnects_and_reruns(device: LoopbackAdbDevice, assets: dict[str, Path]) -> None:
    r = make_runner(device, assets)
    r.ensure_binary()
    device.faults.drop_run = 1
    rec = r.run(assets["model"], 1, 3)
    assert rec.parsed[0].inference is not None and r.t.reconnects == 1


def test_drop_every_time_is_a_clear_error(device: LoopbackAdbDevice, assets: dict[str, Path]) -> None:
    r = make_runner(device, assets, retries=1)
    r.ensure_binary()
    device.faults.drop_run = 10
    with pytest.raises(AdbError, match="failed after 2 attempts"):
        r.run(assets["model"], 1, 3)


@pytest.mark.parametrize("fault", ["truncate_output", "malformed_output"])
def test_bad_output_is_run_again(device: LoopbackAdbDevice, assets: dict[str, Path], fault: str) -> None:
    setattr(device.faults, fault, 1)
    rec = make_runner(device, assets).run(assets["model"], 1, 3)
    assert rec.attempts == 2 and rec.parsed[0].inference is not None


def test_empty_warmup_window_is_measured(device: LoopbackAdbDevice, assets: dict[str, Path]) -> None:
    """``warmup_runs: 0``: the tool prints ``count=0`` for the warm-up window; that is a valid run."""
    rec = make_runner(device, assets).run(assets["model"], 0, 3)
    assert rec.attempts == 1 and rec.parsed[0].warmup is not None and rec.parsed[0].warmup.count == 0
    assert rec.parsed[0].inference is not None and rec.parsed[0].inference.count == 3


def test_timings_cut_inside_a_number_is_run_again(device: LoopbackAdbDevice, assets: dict[str, Path]) -> None:
    device.faults.truncate_timings = 1
    rec = make_runner(device, assets).run(assets["model"], 1, 3)
    assert rec.attempts == 2
    out = rec.parsed[0]
    assert out.inference is not None and out.inference_avg_us == pytest.approx(out.inference.avg_us, rel=2e-5)


def test_one_off_crash_is_run_again(device: LoopbackAdbDevice, assets: dict[str, Path]) -> None:
    device.faults.crash_run = 1
    rec = make_runner(device, assets).run(assets["model"], 1, 3)
    assert rec.attempts == 2 and rec.parsed[0].inference is not None
    device.faults.crash_run = 10
    with pytest.raises(AdbError, match="crashed"):
        make_runner(device, assets).run(assets["model"], 1, 3)


def test_persistently_bad_output_is_a_clear_error(device: LoopbackAdbDevice, assets: dict[str, Path]) -> None:
    device.faults.truncate_output = 10
    with pytest.raises(AdbError, match="unusable after 3 attempts"):
        make_runner(device, assets).run(assets["model"], 1, 3)


def test_slow_replies(device: LoopbackAdbDevice, assets: dict[str, Path]) -> None:
    r = make_runner(device, assets)
    r.ensure_binary()
    device.faults.slow_reply_s = 0.02  # every packet late, within the timeouts: works
    assert r.run(assets["model"], 1, 3).parsed
    device.faults.slow_reply_s = 0.6   # slower than the read timeout: bounded, clear failure
    slow = make_runner(device, assets, read_timeout_s=0.25, retries=1)
    t0 = time.monotonic()
    with pytest.raises(AdbError, match="failed after 2 attempts"):
        slow.t.shell("echo hi")
    assert time.monotonic() - t0 < 15


def test_hot_phone_is_waited_for(device: LoopbackAdbDevice, assets: dict[str, Path]) -> None:
    r = make_runner(device, assets)
    r.facts()
    device.faults.hot_reads = 2
    rec = r.run(assets["model"], 1, 3)
    assert rec.thermal_before is not None and rec.thermal_before.status == 0
    assert device.faults.hot_reads == 0
    device.faults.thermal_status = 3  # stays severe
    with pytest.raises(ThermalError, match="severe"):
        make_runner(device, assets, max_cooldown_s=0.05).run(assets["model"], 1, 3)


def _three_models(assets: dict[str, Path], tmp_path: Path) -> list[tuple[str, Path]]:
    models = []
    for i in range(3):
        p = tmp_path / f"m{i}.tflite"
        shutil.copy(assets["model"], p)
        models.append((f"m{i}", p))
    return models


def test_batch_discards_rows_measured_hot(device: LoopbackAdbDevice, assets: dict[str, Path], tmp_path: Path) -> None:
    r = make_runner(device, assets)
    r.ensure_binary()
    r.facts()
    # thermal reads: host check, m0 before, m0 after stay cool; m1's "before" reads SEVERE
    device.faults.hot_skip_reads, device.faults.hot_reads = 3, 1
    rows = run_batch(r, _three_models(assets, tmp_path), 1, 3, chunk_size=3)
    assert [(row.key, row.attempts) for row in rows] == [("m0", 1), ("m1", 2), ("m2", 1)]
    assert all(max(row.thermal_before, row.thermal_after) <= 1 for row in rows)
    assert device.benchmark_runs == 4  # m1 measured again after the cool-down, nothing else


def test_batch_survives_a_drop_mid_run(device: LoopbackAdbDevice, assets: dict[str, Path], tmp_path: Path) -> None:
    r = make_runner(device, assets)
    r.ensure_binary()
    device.faults.drop_run, device.faults.drop_run_after = 1, 1  # m0 finishes, the link dies during m1
    rows = run_batch(r, _three_models(assets, tmp_path), 1, 3, state_path=tmp_path / "state.json", chunk_size=3)
    assert [(row.key, row.attempts) for row in rows] == [("m0", 1), ("m1", 2), ("m2", 2)]
    assert device.benchmark_runs == 4  # m0 kept from the interrupted script, not measured again
    saved = json.loads((tmp_path / "state.json").read_text())
    assert saved["schema_version"] == 1 and sorted(saved["rows"]) == ["m0", "m1", "m2"]


def test_batch_item_crash_is_retried_not_fatal(device: LoopbackAdbDevice, assets: dict[str, Path],
                                              tmp_path: Path) -> None:
    r = make_runner(device, assets)
    r.ensure_binary()
    device.faults.crash_run, device.faults.crash_run_after = 1, 1  # m0 fine, m1 segfaults once (exit 139)
    rows = run_batch(r, _three_models(assets, tmp_path), 1, 3, state_path=tmp_path / "state.json", chunk_size=3)
    assert [(row.key, row.attempts) for row in rows] == [("m0", 1), ("m1", 2), ("m2", 1)]
    assert device.benchmark_runs == 4


def test_killed_run_leaves_nothing_behind_on_the_phone(device: LoopbackAdbDevice, assets: dict[str, Path],
                                                      tmp_path: Path) -> None:
    """A killed run's batch folder and pushed models are removed by the next run's first use."""
    r = make_runner(device, assets)
    models = _three_models(assets, tmp_path)
    for _, p in models:
        r.push_model(p)
    # what a run killed mid-batch leaves: its batch folder with partial results
    stale = device.fs.host(r.batch_dir + "/0123456789ab")
    stale.mkdir(parents=True)
    (stale / "0.txt").write_text("INFO: STARTING!\n")
    leftover = device.fs.host(r.models_dir + "/deadbeef0000_old.tflite")
    leftover.write_bytes(b"old")
    fresh = make_runner(device, assets)
    rows = run_batch(fresh, models[:1], 1, 3)
    assert [row.key for row in rows] == ["m0"]
    assert not stale.exists() and not leftover.exists()
    assert not device.fs.host(fresh.batch_dir).exists() or not list(device.fs.host(fresh.batch_dir).iterdir())
    assert device.fs.host(fresh.cfg.remote_dir + "/benchmark_model").is_file()  # the binary stays


def test_batch_resumes_and_keeps_finished_rows(device: LoopbackAdbDevice, assets: dict[str, Path],
                                               tmp_path: Path) -> None:
    good = [(f"g{i}", tmp_path / f"g{i}.tflite") for i in range(2)]
    for _, p in good:
        shutil.copy(assets["model"], p)
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer")
    state = tmp_path / "table-state.json"
    r = make_runner(device, assets)
    with pytest.raises(AdbError, match="benchmark_model failed on 'bad'"):
        run_batch(r, [*good, ("bad", broken)], 1, 3, state_path=state, chunk_size=1)
    assert sorted(json.loads(state.read_text())["rows"]) == ["g0", "g1"]  # finished rows kept
    runs_before = device.benchmark_runs
    broken.write_bytes(assets["model"].read_bytes())                     # fix it and resume
    rows = run_batch(make_runner(device, assets), [*good, ("bad", broken)], 1, 3, state_path=state)
    assert [row.key for row in rows] == ["g0", "g1", "bad"]
    assert device.benchmark_runs == runs_before + 1                      # only the missing row ran


def android_profile(dev: LoopbackAdbDevice, assets: dict[str, Path], **options: object):  # type: ignore[no-untyped-def]
    from amc_mobile.latency.profiles import profile_from_dict

    opts = {"address": dev.address, "key_path": str(assets["key"]), "binary": str(assets["binary"]),
            "cooldown_s": 0.0, "connect_timeout_s": 3.0, "auth_timeout_s": 3.0, "retries": 1, **options}
    return profile_from_dict({"name": "loopback", "backend": "android", "warmup_runs": 2, "runs": 5,
                              "options": opts}, "test")


def test_android_backend_measures_through_adb(device: LoopbackAdbDevice, assets: dict[str, Path]) -> None:
    profile = android_profile(device, assets)
    with profile.create_backend() as backend:
        assert backend.check_available() is None
        stats = backend.measure(assets["model"])
        assert stats.count == 5 and 0 < stats.p10_ms <= stats.median_ms <= stats.p90_ms
        raws = backend.run_batch([assets["model"], assets["model"]], 1, [3, 4])
        assert [backend.parse(raw).count for raw in raws] == [3, 4]
        facts = backend.describe_device()
        assert facts["facts"]["soc"].endswith("MSM8996pro") and facts["core_mask"] == "c"
        assert "# thermal_before:" in backend.run(assets["model"], 1, 2)
    per_inv = android_profile(device, assets, sampling="per-invocation")
    with per_inv.create_backend() as backend:
        stats = backend.measure(assets["model"], warmup_runs=1, runs=4)
        assert stats.count == 4


def test_android_identity_is_stable_and_live_readings_are_separate(device: LoopbackAdbDevice,
                                                                   assets: dict[str, Path]) -> None:
    """What a table compares on resume: stable facts only, equal after a JSON round trip."""
    from amc_mobile.latency.fingerprint import differences, identity_of

    profile = android_profile(device, assets)
    with profile.create_backend() as backend:
        stored = json.loads(json.dumps(backend.device_record()))
        live_then = backend.live()
    assert live_then == {"thermal_status": 0, "cur_freq_khz": [1593600, 1593600, 2150400, 2150400]}
    device.faults.thermal_status = 2
    device.fs.write_text("/sys/devices/system/cpu/cpu3/cpufreq/scaling_cur_freq", "998400\n")
    with profile.create_backend() as backend:
        assert differences(identity_of(stored), identity_of(backend.device_record())) == []
        assert backend.live() == {"thermal_status": 2, "cur_freq_khz": [1593600, 1593600, 2150400, 998400]}
    device.props["ro.build.fingerprint"] = "google/sailfish/sailfish:10/QQ3A.200805.001/6578210:user/release-keys"
    with profile.create_backend() as backend:
        diffs = differences(identity_of(stored), identity_of(backend.device_record()))
    assert len(diffs) == 1 and diffs[0].startswith("fingerprint ")


def test_a_phone_is_measured_by_one_process_at_a_time(device: LoopbackAdbDevice, assets: dict[str, Path]) -> None:
    import os

    from amc_mobile.errors import UserError
    from amc_mobile.storage import ExclusiveLock

    profile = android_profile(device, assets)
    with profile.create_backend() as backend, ExclusiveLock(backend.phone_lock_path()):  # another run holds it
        with pytest.raises(UserError, match=rf"phone {device.address} is in use by another process \(PID {os.getpid()}\)"):
            backend.run(assets["model"], 1, 2)
        assert device.benchmark_runs == 0
    with profile.create_backend() as backend:
        assert backend.measure(assets["model"], 1, 2).count == 2  # free again


def test_android_backend_unavailable_reasons(tmp_path: Path, assets: dict[str, Path]) -> None:
    from amc_mobile.errors import UserError
    from amc_mobile.latency.profiles import profile_from_dict

    def profile(**opts: object):  # type: ignore[no-untyped-def]
        return profile_from_dict({"name": "p", "backend": "android", "options": opts}, "test")

    assert "options.binary" in (profile().availability() or "")
    assert "not found" in (profile(binary=str(tmp_path / "nope")).availability() or "")
    down = profile(binary=str(assets["binary"]), address="127.0.0.1:9", key_path=str(assets["key"]),
                   connect_timeout_s=0.5, retries=0)
    assert "cannot reach phone: 127.0.0.1:9" in (down.availability() or "")
    with pytest.raises(UserError, match="unknown key"):
        profile(adress="x:1")
    with pytest.raises(UserError, match="core_mask"):
        profile(core_mask="big")


def test_shipped_android_profiles_load() -> None:
    from amc_mobile.latency.profiles import REPO_PROFILES, load_profile

    pixel = load_profile("pixel1")
    assert pixel.backend == "android" and pixel.threads == 1 and pixel.options["core_mask"] == "c"
    template = load_profile(str(REPO_PROFILES / "android-TEMPLATE.yaml"))
    assert template.backend == "android"


def _profile_yaml(dev: LoopbackAdbDevice, assets: dict[str, Path], tmp_path: Path) -> Path:
    import yaml

    p = tmp_path / "loopback.yaml"
    p.write_text(yaml.safe_dump({
        "schema_version": 1, "name": "loopback", "backend": "android", "threads": 1, "warmup_runs": 2,
        "runs": 5, "repeats": 2, "min_window_ms": 2.0, "calibrate_overhead": False,
        "options": {"address": dev.address, "key_path": str(assets["key"]), "binary": str(assets["binary"]),
                    "cooldown_s": 0.0}}))
    return p


def test_amc_bench_measure_through_adb(device: LoopbackAdbDevice, assets: dict[str, Path], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from amc_mobile.cli.bench import app
    from amc_mobile.cli.common import run_app

    monkeypatch.setenv("AMC_ARTIFACT_CACHE", str(assets["dir"] / "cache"))
    profile = _profile_yaml(device, assets, tmp_path)
    assert run_app(app, ["measure", str(assets["model"]), "--device", str(profile), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["median_ms"] > 0 and out["metadata"]["facts"]["model"] == "Pixel"
    assert device.benchmark_runs >= 3


@pytest.mark.slow
def test_amc_bench_profile_builds_a_table_through_adb(device: LoopbackAdbDevice, assets: dict[str, Path],
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from amc_mobile.cli.bench import app
    from amc_mobile.cli.common import run_app

    monkeypatch.setenv("AMC_ARTIFACT_CACHE", str(assets["dir"] / "cache"))
    table = tmp_path / "table.csv"
    argv = ["profile", "--device", str(_profile_yaml(device, assets, tmp_path)), "--model", "mobilenet_v1_cifar",
            "--points", "2", "--max-rows", "2", "--out", str(table)]
    assert run_app(app, argv) == 0
    rows = table.read_text().strip().splitlines()
    assert rows[0].startswith("slot,cin,cout,latency_ms") and len(rows) == 3


@pytest.mark.device
def test_real_phone(assets: dict[str, Path]) -> None:
    """On a real phone ($AMC_DEVICE_ADDRESS or $AMC_DEVICE_SERIAL; binary at $AMC_BENCHMARK_MODEL)."""
    import os

    binary = os.environ.get("AMC_BENCHMARK_MODEL", str(Path("~/.cache/amc-mobile/android_aarch64_benchmark_model").expanduser()))
    if not Path(binary).is_file():
        pytest.skip("set AMC_BENCHMARK_MODEL to the Android benchmark_model binary")
    cfg = AdbConfig(address=os.environ.get("AMC_DEVICE_ADDRESS") or None, serial=os.environ.get("AMC_DEVICE_SERIAL") or None)
    r = BenchmarkRunner(AdbTransport(cfg), RunnerConfig(binary=binary))
    facts = r.facts()
    assert facts.model and facts.cpu_max_freq_khz and facts.android_version
    rec = r.run(assets["model"], 2, 10)
    assert rec.parsed[0].inference is not None and rec.parsed[0].inference.count == 10


@pytest.mark.slow
def test_phone_table_resumes_after_a_stop(device: LoopbackAdbDevice, assets: dict[str, Path], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A phone's latency table stopped part-way resumes: the identity holds only stable facts (JSON
    lists compare equal to the tuples read live); thermal status and current frequencies differ
    between the runs and are recorded per row, never compared."""
    from amc_mobile.latency.profiles import load_profile
    from amc_mobile.latency.profiling import profile_table
    from amc_mobile.latency.table import read_meta
    from amc_mobile.models import create_model

    monkeypatch.setenv("AMC_ARTIFACT_CACHE", str(assets["dir"] / "cache"))
    profile = load_profile(str(_profile_yaml(device, assets, tmp_path)))
    model = create_model("mobilenet_v1_cifar", width_mult=0.25)
    out = tmp_path / "phone-table.csv"
    assert profile_table(profile, model, out, points=2, max_rows=1, calibration=None).new_rows == 1
    meta = read_meta(out)
    ident = meta["device"]["identity"]
    assert ident["model"] == "Pixel" and ident["core_mask"] == "c" and ident["cpu_max_freq_khz"] == [1593600, 1593600,
                                                                                                      2150400, 2150400]
    assert "thermal" not in json.dumps(ident) and "cur_freq" not in json.dumps(ident)
    # between the runs the phone warmed up a little and its governor moved the clocks
    device.faults.thermal_status = 1
    device.fs.write_text("/sys/devices/system/cpu/cpu2/cpufreq/scaling_cur_freq", "1824000\n")
    again = profile_table(profile, model, out, points=2, max_rows=1, calibration=None)  # must not refuse
    assert (again.new_rows, again.rows) == (1, 2)
    rows = out.read_text().strip().splitlines()
    assert len(rows) == 3  # header + the first run's row + one more: resumed, nothing duplicated
    assert "thermal_status=0" in rows[1] and "thermal_status=1" in rows[2] and "1824000" in rows[2]
