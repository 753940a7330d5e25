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
__version__ = "0.1.0"

from .analysis.study import Study, open
from .api.analyze import AnalyzeReport, analyze
from .api.client import Client, RetryPolicy
from .api.request import Params
from .errors import (ApiError, AuthError, FaceQualityError, InvalidInput, InvalidManifest, InvalidResponse,
                     ParameterError, PhotoRejected, RateLimited, ServerError, SkintrackError, TransportError,
                     UnknownMetric, UsageError)
from .tables.catalog import catalog
from .tables.flatten import flatten
from .tables.ingest import IngestReport, ingest
from .tables.plan import Endpoint, Plan, Visit

__all__ = [
    "AnalyzeReport", "ApiError", "AuthError", "Client", "Endpoint", "FaceQualityError", "IngestReport", "InvalidInput",
    "InvalidManifest", "InvalidResponse", "Params", "ParameterError", "PhotoRejected", "Plan", "RateLimited",
    "RetryPolicy", "ServerError", "SkintrackError", "Study", "TransportError", "UnknownMetric", "UsageError", "Visit",
    "analyze", "catalog", "flatten", "ingest", "open",
]


def __getattr__(name):
    """`skintrack.charts` and `skintrack.report`, imported on first use (matplotlib is slow to import)."""
    if name in ("charts", "report"):
        import importlib

        return importlib.import_module(f".show.{name}", __name__)
    raise AttributeError(f"module 'skintrack' has no attribute {name!r}")
