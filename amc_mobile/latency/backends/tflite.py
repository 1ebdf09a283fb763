"""LiteRT (ai-edge-litert) on this machine's CPU, XNNPACK delegate, models converted by litert-torch."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amc_mobile.errors import UserError
from amc_mobile.latency.artifacts import cached_export
from amc_mobile.latency.backends.host import HostOptions, time_calls
from amc_mobile.latency.base import (
    LatencyBackend,
    LatencyStats,
    format_samples,
    parse_samples,
    register_backend,
)
from amc_mobile.latency.fingerprint import host_facts


@dataclass(frozen=True)
class TFLiteOptions(HostOptions):
    xnnpack: bool = True  # False: the reference CPU kernels (slow; for debugging only)


@register_backend("tflite")
class TFLiteBackend(LatencyBackend):
    artifact_suffix = ".tflite"
    unit_layout = "nhwc"  # TFLite kernels run NHWC: units are timed without the converter's boundary transposes
    Options = TFLiteOptions
    options: TFLiteOptions

    def __init__(self, profile: Any) -> None:
        super().__init__(profile)
        self._interps: dict[str, Any] = {}

    def check_available(self) -> str | None:
        from importlib.util import find_spec

        if find_spec("ai_edge_litert") is None:
            return "ai-edge-litert is not installed; fix: pip install 'amc-mobile[tflite]'"
        if find_spec("litert_torch") is None:
            return "litert-torch (needed to convert models) is not installed; fix: pip install 'amc-mobile[tflite]'"
        return None

    def prepare(self, model: Any, input_shape: tuple[int, ...], path: str | Path) -> Path:
        from amc_mobile.export.tflite import export_tflite

        def export(m: Any, p: Path, shape: tuple[int, ...]) -> None:
            export_tflite(m, p, shape, atol=self.options.atol)

        return cached_export(export, model.eval(), self.artifact_path(path), tuple(input_shape),
                             "litert-torch", self.options.cache_artifacts)

    def _interpreter(self, artifact: str | Path) -> Any:
        import numpy as np
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        key = str(Path(artifact).resolve())
        if key not in self._interps:
            resolver = OpResolverType.AUTO if self.options.xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            try:
                interp = Interpreter(model_path=key, num_threads=self.profile.threads,
                                     experimental_op_resolver_type=resolver)
                interp.allocate_tensors()
            except (ValueError, RuntimeError) as exc:
                raise UserError(f"cannot load {artifact} in LiteRT: {str(exc).splitlines()[0][:200]}") from exc
            inp = interp.get_input_details()[0]
            x = np.random.default_rng(0).standard_normal(inp["shape"]).astype(inp["dtype"])
            interp.set_tensor(inp["index"], x)
            self._interps[key] = interp
        return self._interps[key]

    def run(self, artifact: str | Path, warmup_runs: int, runs: int) -> str:
        interp = self._interpreter(artifact)
        samples = time_calls(interp.invoke, warmup_runs, runs, self.options.clock, self.profile.threads)
        return format_samples(samples, {"runner": "amc-mobile litert", "artifact": Path(artifact).name,
                                         "clock": self.options.clock})

    def parse(self, raw: str) -> LatencyStats:
        return parse_samples(raw)

    def describe_device(self) -> dict[str, Any]:
        from importlib.metadata import version

        return {**super().describe_device(), "runtime": "ai-edge-litert", "runtime_version": version("ai-edge-litert"),
                "converter_version": version("litert-torch"), "xnnpack": self.options.xnnpack,
                **host_facts(), "host": platform.node(), "clock": self.options.clock}

    def close(self) -> None:
        self._interps.clear()
