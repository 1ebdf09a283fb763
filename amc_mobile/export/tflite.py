"""TFLite export through litert-torch (the ``tflite`` extra), checked numerically with ai-edge-litert.

The converted model keeps the NCHW input layout of the torch model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from amc_mobile.errors import UserError

INSTALL_HINT = "pip install 'amc-mobile[tflite]'"


@dataclass(frozen=True)
class TFLiteExportReport:
    path: str
    input_shape: tuple[int, ...]
    max_abs_error: float
    size_bytes: int


def require_litert() -> None:
    """One-line UserError when the ``tflite`` extra is missing."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
        import litert_torch  # noqa: F401
    except ImportError as exc:
        raise UserError(f"TFLite export needs litert-torch and ai-edge-litert ({exc.name} missing); "
                        f"fix: {INSTALL_HINT}") from exc


def run_tflite(path: str | Path, x: torch.Tensor, threads: int = 1) -> torch.Tensor:
    """One inference of a ``.tflite`` file with the LiteRT interpreter (ai-edge-litert)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], x.numpy().astype(inp["dtype"]))
    interp.invoke()
    return torch.from_numpy(interp.get_tensor(interp.get_output_details()[0]["index"]).copy())


def export_tflite(model: nn.Module, path: str | Path, input_shape: tuple[int, ...],
                  atol: float = 1e-3) -> TFLiteExportReport:
    """Convert ``model`` (eval mode) to ``path`` and compare LiteRT's output with torch on a random
    input; ``atol`` is relative to the output's max |value| (at least 1)."""
    require_litert()
    import litert_torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    x = torch.randn(*input_shape)
    tmp = path.with_name(path.stem + ".tmp.tflite")
    import contextlib
    import io

    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            litert_torch.convert(model, (x,)).export(str(tmp))
    except Exception as exc:  # the converter raises many types
        raise UserError(f"litert-torch could not convert {type(model).__name__}: "
                        f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__}") from exc
    with torch.no_grad():
        ref = model(x)
    out = run_tflite(tmp, x)
    err = float((out.reshape(ref.shape) - ref).abs().max()) if ref.numel() else 0.0
    scale = max(1.0, float(ref.abs().max())) if ref.numel() else 1.0
    if not err <= atol * scale:
        tmp.unlink(missing_ok=True)
        raise UserError(f"TFLite export differs from torch: max |error| {err:.3g} > {atol * scale:.3g}")
    tmp.replace(path)
    return TFLiteExportReport(str(path), tuple(input_shape), err, path.stat().st_size)
