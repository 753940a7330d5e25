"""skintrack: longitudinal skin analysis from Skin Analyze Pro responses.

Example
-------
>>> import skintrack
>>> "score.total" in set(skintrack.catalog()["key"])
True
"""
__version__ = "0.1.0"

from .analyze import AnalyzeReport, analyze
from .catalog import catalog
from .client import Client, RetryPolicy
from .errors import (ApiError, AuthError, FaceQualityError, InvalidInput, InvalidManifest, InvalidResponse,
                     ParameterError, PhotoRejected, RateLimited, ServerError, SkintrackError, TransportError,
                     UnknownMetric, UsageError)
from .flatten import flatten
from .ingest import IngestReport, ingest
from .request import Params
from .study import Study, open

__all__ = [
    "AnalyzeReport", "Client", "Params", "RetryPolicy", "analyze", "ApiError", "AuthError", "FaceQualityError", "IngestReport", "InvalidInput", "InvalidManifest", "InvalidResponse",
    "ParameterError", "PhotoRejected", "RateLimited", "ServerError", "SkintrackError", "Study", "TransportError",
    "UnknownMetric", "UsageError", "catalog", "flatten", "ingest", "open",
]
