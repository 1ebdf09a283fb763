"""onnxruntime on this machine's CPU (in-process, IO binding so no per-run input copies)."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amc_mobile.export.onnx import export_onnx
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
class OnnxRuntimeOptions(HostOptions):
    provider: str = "CPUExecutionProvider"
    graph_optimization: str = "all"  # disable | basic | extended | all


@register_backend("onnxruntime")
class OnnxRuntimeBackend(LatencyBackend):
    artifact_suffix = ".onnx"
    Options = OnnxRuntimeOptions
    options: OnnxRuntimeOptions

    def __init__(self, profile: Any) -> None:
        super().__init__(profile)
        self._sessions: dict[str, Any] = {}

    def check_available(self) -> str | None:
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed; fix: pip install onnxruntime"
        if self.options.provider not in ort.get_available_providers():
            return (f"onnxruntime provider {self.options.provider} is not available here "
                    f"(have: {', '.join(ort.get_available_providers())})")
        return None

    def prepare(self, model: Any, input_shape: tuple[int, ...], path: str | Path) -> Path:
        def export(m: Any, p: Path, shape: tuple[int, ...]) -> None:
            export_onnx(m, p, shape, atol=self.options.atol)

        return cached_export(export, model.eval(), self.artifact_path(path), tuple(input_shape),
                             "onnx-ts17", self.options.cache_artifacts)

    def _session(self, artifact: str | Path) -> tuple[Any, Any]:
        import numpy as np
        import onnxruntime as ort

        key = str(Path(artifact).resolve())
        if key not in self._sessions:
            so = ort.SessionOptions()
            so.intra_op_num_threads = self.profile.threads
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.graph_optimization_level = {
                "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            }[self.options.graph_optimization]
            try:
                sess = ort.InferenceSession(key, so, providers=[self.options.provider])
            except Exception as exc:  # onnxruntime raises its own exception types
                from amc_mobile.errors import UserError

                raise UserError(f"cannot load {artifact} in onnxruntime: {str(exc).splitlines()[0][:200]}") from exc
            inp = sess.get_inputs()[0]
            shape = [d if isinstance(d, int) else self.profile.batch_size for d in inp.shape]
            if shape and not isinstance(inp.shape[0], int):
                shape[0] = self.profile.batch_size
            x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            binding = sess.io_binding()
            binding.bind_ortvalue_input(inp.name, ort.OrtValue.ortvalue_from_numpy(x))
            for out in sess.get_outputs():
                binding.bind_output(out.name, "cpu")
            self._sessions[key] = (sess, binding)
        return self._sessions[key]

    def run(self, artifact: str | Path, warmup_runs: int, runs: int) -> str:
        sess, binding = self._session(artifact)
        samples = time_calls(lambda: sess.run_with_iobinding(binding), warmup_runs, runs, self.options.clock,
                             self.profile.threads)
        return format_samples(samples, {"runner": "amc-mobile onnxruntime", "artifact": Path(artifact).name,
                                         "clock": self.options.clock})

    def parse(self, raw: str) -> LatencyStats:
        return parse_samples(raw)

    def describe_device(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {**super().describe_device(), "runtime": "onnxruntime", "runtime_version": ort.__version__,
                "provider": self.options.provider, "graph_optimization": self.options.graph_optimization,
                **host_facts(), "host": platform.node(), "clock": self.options.clock}

    def close(self) -> None:
        self._sessions.clear()
