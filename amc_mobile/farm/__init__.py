"""Device farm: the speedup of a candidate model over a baseline on every device of a farm file.

Device-agnostic: a farm device is any latency-backend profile (host runtimes, GPUs, Android phones
through the ``android`` backend, which the registry imports lazily). Three parts:

* :mod:`amc_mobile.farm.spec` - the farm YAML (:class:`FarmSpec`, :class:`FarmDevice`), profiles, models;
* :mod:`amc_mobile.farm.run` - :func:`measure_device` (one device, picklable inputs, never raises on a
  device failure) and :func:`run_farm` (maps it over the devices: threads by default, any ``mapper``);
* :mod:`amc_mobile.farm.report` - ``farm-report.md``, ``farm-report.json`` and ``farm-speedup.png``.
"""

from amc_mobile.farm.report import SCHEMA_VERSION, markdown_table, write_report
from amc_mobile.farm.run import DeviceResult, measure_device, run_farm, thread_mapper
from amc_mobile.farm.spec import FarmDevice, FarmSpec, load_farm, load_model, resolve_profile

__all__ = [
    "SCHEMA_VERSION", "DeviceResult", "FarmDevice", "FarmSpec", "load_farm", "load_model", "markdown_table",
    "measure_device", "resolve_profile", "run_farm", "thread_mapper", "write_report",
]
