"""One exception tree for skintrack, and the checks that refuse a number nothing can use (`finite`, `whole`,
`is_number`, `is_whole`).

::

    SkintrackError                    root: catch this to catch everything skintrack raises
    ├── UsageError                    a bad argument, path or option (CLI exit status 2)
    ├── InvalidInput                  an input that cannot be taken; names the input and the problem
    │   ├── InvalidResponse           a file that is not a Skin Analyze Pro response
    │   ├── InvalidManifest           a manifest or subjects CSV that cannot be used
    │   └── PhotoRejected             a photo the API would refuse; refused before paying
    ├── UnknownMetric                 a metric key not in the catalog
    ├── StoreError                    the study store is damaged or unreadable; names the study and the file
    └── ApiError                      the API answered with an error; carries .response, .code, .retryable
        ├── AuthError                 401/403: the key is missing or refused      (retryable: no)
        ├── ParameterError            400/413/415: the request is wrong           (retryable: no)
        ├── FaceQualityError          422: no face, blurry, occluded, ...          (retryable: no)
        ├── RateLimited               429 or AI_SERVICE_FLOW_RESTRICTION          (retryable: yes, except credits)
        ├── ServerError               5xx with the service's own answer           (retryable: yes)
        ├── TransportError            no connection; nothing was sent              (retryable: yes)
        └── AnswerLost                sent, but the answer was lost, cut or late   (retryable: no: it may be billed)

Example
-------
>>> try:
...     raise InvalidResponse("result.score_info.total_score: expected a number")
... except SkintrackError as e:
...     print(type(e).__name__, e)
InvalidResponse result.score_info.total_score: expected a number
"""
from __future__ import annotations

import math
import numbers


class SkintrackError(Exception):
    """Root of every error skintrack raises."""


class UsageError(SkintrackError):
    """A bad argument, path or option."""


class NotApplicable(UsageError):
    """An analysis that does not apply to this study's design or plan (the sensitivity analyses of an endpoint
    that another model than the MMRM analyses), as distinct from one the data cannot estimate."""


class InvalidInput(SkintrackError):
    """An input that cannot be taken."""


class InvalidResponse(InvalidInput):
    """A document that is not a Skin Analyze Pro response (the message names the JSON path)."""


class InvalidManifest(InvalidInput):
    """A manifest or subjects CSV that cannot be used."""


class PhotoRejected(InvalidInput):
    """A photo the API would refuse, refused before any call is paid for."""


class UnknownMetric(SkintrackError, KeyError):
    """A metric key that is not in the catalog."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class StoreError(SkintrackError):
    """The study store cannot be read or written as it is: a lost or damaged catalog, a missing or truncated
    data file, a catalog server that went away. The message names the study, the file and what to do."""


class ApiError(SkintrackError):
    """The API answered with an error.

    Attributes: ``status`` (HTTP status or None), ``code`` (the documented ``error_detail.code``),
    ``response`` (the parsed body, if any), ``body`` (the bytes received, key redacted, if any: the archive keeps
    a photo's final outcome and what arrived of a lost answer), ``retryable`` (whether trying again can help),
    ``retry_after`` (seconds the server asked to wait, if it said), ``about_photo`` (whether it is the
    photo's own outcome, final for that photo; anything else stops a batch and is tried again later).
    """

    retryable = False
    about_photo = False  # the photo's own final outcome (no face, ...), not the account's, key's or service's

    def __init__(self, message, *, status=None, code=None, response=None, retry_after=None, body=None):
        super().__init__(message)
        self.status, self.code, self.response, self.retry_after = status, code, response, retry_after
        self.body = body


class AuthError(ApiError):
    """The API key is missing or was refused."""


class ParameterError(ApiError):
    """The request's parameters or file were refused."""


class FaceQualityError(ApiError):
    """The photo was refused for its face (none found, blurred, occluded, ...)."""


class RateLimited(ApiError):
    """Too many requests; trying later can help (not when credits ran out)."""

    retryable = True


class ServerError(ApiError):
    """The service failed; trying later can help."""

    retryable = True


class TransportError(ApiError):
    """The connection could not be made, so the request never reached the service; trying again can help."""

    retryable = True


class AnswerLost(ApiError):
    """The request was sent whole, but its answer was lost, cut short or came too late: the service may
    have analysed the photo and billed it. Never sent again by itself (`--resend-uncertain` does, and may
    pay twice)."""


def is_number(value) -> bool:
    """A real number that is neither NaN nor infinite (nor a boolean)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def is_whole(value) -> bool:
    """An integer (a numpy one too), not a boolean."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def finite(value, what: str, positive: bool = False, least: float | None = None) -> float:
    """`value` as a float when it is a finite number (above 0 when `positive`, at least `least` if given), else
    a `UsageError` naming `what`: a threshold, margin or window of NaN or infinity would pass every comparison
    or none, silently.

    >>> finite(2, "the responder threshold")
    2.0
    >>> finite(float("inf"), "the equivalence margin", positive=True)
    Traceback (most recent call last):
    ...
    skintrack.errors.UsageError: the equivalence margin must be a finite number above 0, not inf
    """
    if not is_number(value) or (positive and value <= 0):
        raise UsageError(f"{what} must be a finite number{' above 0' if positive else ''}, not {value!r}")
    if least is not None and value < least:
        raise UsageError(f"{what} must be at least {least:g}, not {value!r}")
    return float(value)


def whole(value, what: str, least: int = 1) -> int:
    """`value` when it is a whole number of at least `least`, else a `UsageError` naming `what`.

    >>> whole(0, "workers")
    Traceback (most recent call last):
    ...
    skintrack.errors.UsageError: workers must be a whole number of at least 1, not 0
    """
    if not is_whole(value) or value < least:
        raise UsageError(f"{what} must be a whole number of at least {least}, not {value!r}")
    return int(value)
