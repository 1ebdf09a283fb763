"""Device profiles and the backend registry: typed loading, unknown keys named, availability."""

from __future__ import annotations

from dataclasses import fields

import pytest

from amc_mobile.errors import UserError
from amc_mobile.latency import get_backend, list_backends, list_profiles, load_profile
from amc_mobile.latency.profiles import REPO_PROFILES, profile_from_dict


@pytest.mark.parametrize("name", list_profiles())
def test_shipped_profiles_load_into_typed_records(name: str) -> None:
    prof = load_profile(name)
    assert prof.name == name
    assert prof.threads >= 1 and prof.runs >= 1 and prof.repeats >= 1
    backend = prof.create_backend()
    assert backend.options.__class__ is get_backend(prof.backend).Options
    reason = prof.availability()
    assert reason is None or isinstance(reason, str)


def test_template_is_a_valid_profile_but_not_listed() -> None:
    assert "TEMPLATE" not in list_profiles()
    prof = load_profile(REPO_PROFILES / "TEMPLATE.yaml")
    assert prof.backend in list_backends()


def test_unknown_top_level_key_is_named() -> None:
    with pytest.raises(UserError, match="repeatz"):
        profile_from_dict({"name": "x", "backend": "onnxruntime", "repeatz": 3}, "x.yaml")


def test_unknown_option_key_is_named_by_the_backend_options() -> None:
    with pytest.raises(UserError, match="provdier"):
        profile_from_dict({"name": "x", "backend": "onnxruntime", "options": {"provdier": "CPU"}}, "x.yaml")


def test_bad_values_are_rejected() -> None:
    with pytest.raises(UserError, match="runs"):
        profile_from_dict({"name": "x", "backend": "onnxruntime", "runs": 0}, "x.yaml")
    with pytest.raises(UserError, match="clock"):
        profile_from_dict({"name": "x", "backend": "onnxruntime", "options": {"clock": "sundial"}}, "x.yaml")


def test_unknown_device_lists_profiles() -> None:
    with pytest.raises(UserError) as info:
        load_profile("no-such-phone")
    for name in list_profiles():
        assert name in str(info.value)


def test_unknown_backend_lists_backends() -> None:
    with pytest.raises(UserError, match="onnxruntime") as info:
        profile_from_dict({"name": "x", "backend": "abacus"}, "x.yaml")
    assert all(name in str(info.value) for name in list_backends())


@pytest.mark.parametrize("backend", list_backends())
def test_every_backend_names_an_unknown_option_and_its_valid_ones(backend: str) -> None:
    valid = [f.name for f in fields(get_backend(backend).Options)]
    with pytest.raises(UserError, match="unknown key.*no_such_option") as info:
        profile_from_dict({"name": "x", "backend": backend, "options": {"no_such_option": 1}}, "x.yaml")
    assert str(info.value).count("\n") == 0 and all(name in str(info.value) for name in valid)


def test_extra_profile_dir_from_env(tmp_path, monkeypatch) -> None:
    (tmp_path / "my-box.yaml").write_text("name: my-box\nbackend: onnxruntime\nruns: 3\n")
    monkeypatch.setenv("AMC_DEVICE_PROFILES", str(tmp_path))
    assert "my-box" in list_profiles()
    assert load_profile("my-box").runs == 3


def test_cuda_profile_reason_is_one_line_when_no_gpu() -> None:
    import torch

    reason = load_profile("gpu-cuda").availability()
    if torch.cuda.is_available():
        assert reason is None
    else:
        assert reason and "\n" not in reason and "CUDA" in reason
