"""Compatibility names for the old single-module LUT: profiling lives in
:mod:`amc_mobile.latency.profiling`, tables and prediction in :mod:`amc_mobile.latency.table`, the
store (lookup, validation on use, adaptation) in :mod:`amc_mobile.latency.store`."""

from amc_mobile.latency.profiling import (
    ModelConfig,
    SlotGrid,
    axis_points,
    calibration_configs,
    plan_grid,
    profile_table,
)
from amc_mobile.latency.table import (
    CALIB_COLUMNS,
    COLUMNS,
    TABLE_SCHEMA,
    LatencyTable,
    default_table_path,
)

__all__ = ["CALIB_COLUMNS", "COLUMNS", "TABLE_SCHEMA", "LatencyTable", "ModelConfig", "SlotGrid", "axis_points",
           "calibration_configs", "default_table_path", "plan_grid", "profile_table"]
