"""Export to deployment formats with a numerical check against torch.

``export_onnx`` (always available) lives in :mod:`amc_mobile.export.onnx`; ``export_tflite`` in
:mod:`amc_mobile.export.tflite` needs the ``tflite`` extra and is imported lazily.
"""

from amc_mobile.export.onnx import ExportReport, export_onnx

__all__ = ["ExportReport", "export_onnx"]
