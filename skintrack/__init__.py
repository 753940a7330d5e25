"""skintrack: longitudinal skin analysis from Skin Analyze Pro responses.

The package follows the data, one sub-package per stage::

    photo -> api/ (checks, client, raw archive) -> tables/ (flatten, Parquet store, catalog)
          -> analysis/ (study, trends, trial statistics, QC) -> show/ (charts, report)

`sample/` makes SIMULATED data; `cli.py` and `demo.py` run the stages.

Example
-------
>>> import skintrack
>>> "score.total" in set(skintrack.catalog()["key"])
True
"""
__version__ = "0.2.0"

from .errors import (AnswerLost, ApiError, AuthError, FaceQualityError, InvalidInput, InvalidManifest, InvalidResponse,
                     NotApplicable, ParameterError, PhotoRejected, RateLimited, ServerError, SkintrackError, StoreError,
                     TransportError, UnknownMetric, UsageError)

# The rest loads on first use (PEP 562), so that `skintrack --help` does not wait for pandas and scipy.
_LAZY = {"Study": "analysis.study", "open": "analysis.study", "AnalyzeReport": "api.analyze", "analyze": "api.analyze",
         "Client": "api.client", "RetryPolicy": "api.client", "Params": "api.request", "catalog": "tables.catalog",
         "flatten": "tables.flatten", "IngestReport": "tables.ingest", "ingest": "tables.ingest",
         "Endpoint": "tables.plan", "Plan": "tables.plan", "Visit": "tables.plan", "export": "show.export",
         "build_report": "show.report", "charts": "show.charts",
         "report": "show.report"}

__all__ = [
    "AnalyzeReport", "AnswerLost", "ApiError", "AuthError", "Client", "Endpoint", "FaceQualityError", "IngestReport",
    "InvalidInput", "InvalidManifest", "InvalidResponse", "NotApplicable", "Params", "ParameterError", "PhotoRejected",
    "Plan", "RateLimited", "RetryPolicy", "ServerError", "SkintrackError", "StoreError", "Study", "TransportError",
    "UnknownMetric", "UsageError", "Visit", "analyze", "build_report", "catalog", "export", "flatten", "ingest", "open",
]


def __getattr__(name):
    """The public names (and `skintrack.charts`, `skintrack.report`), imported on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module 'skintrack' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(f".{_LAZY[name]}", __name__)
    value = module if name in ("charts", "report") else getattr(module, name)  # export is show.export.export
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
