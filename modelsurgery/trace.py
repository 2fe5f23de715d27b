"""Deprecated: the graph analyses live in `modelsurgery.analysis`, the fx tracer in `modelsurgery.tracing`."""

from .deprecation import moved

_NAMES = {name: "modelsurgery.analysis" for name in (
    "ConvRecord", "FCRecord", "Analysis", "analyze", "MERGE_FUNCTIONS", "MERGE_METHODS", "meta_copy",
    "flatten_source_hw", "warn_skipped", "SIZE_ATTRS")}
_NAMES.update(trace="modelsurgery.tracing", trace_covering="modelsurgery.tracing", first_line="modelsurgery.errors")
__getattr__ = moved(__name__, _NAMES)
