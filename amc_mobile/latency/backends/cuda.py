"""torch on a CUDA GPU, timed with CUDA events (batch size from the profile)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amc_mobile.errors import UserError
from amc_mobile.latency.base import (
    BackendOptions,
    LatencyBackend,
    LatencyStats,
    format_samples,
    parse_samples,
    register_backend,
)


@dataclass(frozen=True)
class CudaOptions(BackendOptions):
    device_index: int = 0
    cudnn_benchmark: bool = True
    channels_last: bool = False


@register_backend("cuda")
class CudaBackend(LatencyBackend):
    """The artefact is the eval model traced to TorchScript (``.pt``) plus its input shape (``.shape``)."""

    artifact_suffix = ".pt"
    Options = CudaOptions
    options: CudaOptions

    def __init__(self, profile: Any) -> None:
        super().__init__(profile)
        self._loaded: dict[str, Any] = {}

    def check_available(self) -> str | None:
        import torch

        if not torch.cuda.is_available():
            return ("no CUDA GPU visible to torch (torch " + torch.__version__ + "); fix: run on a machine "
                    "with an NVIDIA GPU and a CUDA build of torch (pip install torch --index-url "
                    "https://download.pytorch.org/whl/cu124)")
        if self.options.device_index >= torch.cuda.device_count():
            return f"CUDA device {self.options.device_index} does not exist ({torch.cuda.device_count()} visible)"
        return None

    def _device(self) -> Any:
        import torch

        return torch.device("cuda", self.options.device_index)

    def prepare(self, model: Any, input_shape: tuple[int, ...], path: str | Path) -> Path:
        import torch

        path = self.artifact_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        model = model.eval()
        x = torch.randn(*input_shape)
        with torch.no_grad():
            traced = torch.jit.trace(model, (x,))
        traced.save(str(path))
        path.with_suffix(".shape").write_text(" ".join(str(d) for d in input_shape))  # batch dim replaced at run
        return path

    def _load(self, artifact: str | Path) -> tuple[Any, Any]:
        import torch

        key = str(Path(artifact).resolve())
        if key not in self._loaded:
            reason = self.check_available()
            if reason:
                raise UserError(reason)
            torch.backends.cudnn.benchmark = self.options.cudnn_benchmark
            try:
                module = torch.jit.load(key, map_location=self._device()).eval()
            except (RuntimeError, ValueError) as exc:
                raise UserError(f"cannot load {artifact} as a TorchScript model: {str(exc).splitlines()[0][:160]}") from exc
            shape = None
            meta = Path(key).with_suffix(".shape")
            if meta.exists():
                dims = [int(v) for v in meta.read_text().split()]
                shape = (self.profile.batch_size, *dims[1:])
            if shape is None:
                raise UserError(f"{artifact}: input shape unknown (expected {meta.name} next to it)")
            x = torch.randn(*shape, device=self._device())
            if self.options.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
                module = module.to(memory_format=torch.channels_last)
            self._loaded[key] = (module, x)
        return self._loaded[key]

    def run(self, artifact: str | Path, warmup_runs: int, runs: int) -> str:
        import torch

        module, x = self._load(artifact)
        with torch.inference_mode():
            for _ in range(warmup_runs):
                module(x)
            torch.cuda.synchronize(self._device())
            samples = []
            for _ in range(runs):
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                module(x)
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end))
        return format_samples(samples, {"runner": "amc-mobile cuda-events", "batch_size": x.shape[0]})

    def parse(self, raw: str) -> LatencyStats:
        return parse_samples(raw)

    def describe_device(self) -> dict[str, Any]:
        import torch

        info = {**super().describe_device(), "runtime": "torch-cuda", "runtime_version": torch.__version__}
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(self.options.device_index)
            info["cuda_version"] = torch.version.cuda
        return info

    def close(self) -> None:
        self._loaded.clear()
