"""Model registry, self-description and MACs/params counting."""

from amc_mobile.models import mobilenet_v1, mobilenet_v2, resnet, vgg  # noqa: F401  (registers the models)
from amc_mobile.models.arch import ArchSpec, get_arch, require_arch, set_arch
from amc_mobile.models.describe import LayerSpec, ModelDescription, count_macs_params, describe_model
from amc_mobile.models.registry import create_model, get_entry, list_models, register_model

__all__ = [
    "ArchSpec", "LayerSpec", "ModelDescription", "count_macs_params", "create_model", "describe_model",
    "get_arch", "get_entry", "list_models", "register_model", "require_arch", "set_arch",
]
