"""`skintrack.Client`: one Skin Analyze Pro call, with retries that only retry what can succeed later.

Errors are classified by the documented `error_detail.code`, then by the HTTP status, then by the older
envelopes (`error_code`, `error_code_str`); see `skintrack.errors` for the tree. 429, 5xx,
`AI_SERVICE_FLOW_RESTRICTION`, timeouts, dropped connections and truncated bodies are retried with
exponential backoff and full jitter, honouring `Retry-After`; face-quality and parameter errors never are.
The API key is sent only in the `ailabapi-api-key` header and is never shown.

Example
-------
>>> c = Client(api_key="sk-secret", url="http://127.0.0.1:9/x")
>>> "sk-secret" in repr(c)
False
"""
from __future__ import annotations

import email.utils
import os
import random
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

import orjson
import requests
import requests.adapters

from ..tables.codes import CODES, about_photo
from ..errors import (ApiError, AuthError, FaceQualityError, ParameterError, RateLimited, ServerError,
                     TransportError, UsageError)
from .request import Params, Photo

DEFAULT_URL = "https://www.ailabapi.com/api/portrait/analysis/skin-analysis-pro"
KEY_ENV, URL_ENV = "AILABAPI_API_KEY", "SKINTRACK_API_URL"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry what can succeed later."""

    attempts: int = 5  # in all, the first try included
    base: float = 1.0  # seconds before the first retry (before jitter)
    cap: float = 30.0  # longest wait between tries
    timeout: tuple = (10.0, 120.0)  # connect, read seconds

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)], never before the server's Retry-After."""
        return max(retry_after or 0.0, rng.uniform(0, min(self.cap, self.base * 2 ** attempt)))


@dataclass
class Reply:
    """A response body as received, with the call's metadata (never the key)."""

    body: bytes
    status: int
    document: dict | None
    attempts: int
    seconds: float
    started_at: float
    errors: list = field(default_factory=list)  # what the retried tries ran into


def classify(status: int | None, document, retry_after=None) -> ApiError | None:
    """The error a response stands for, or None when it is a success."""
    detail = document.get("error_detail") if isinstance(document, dict) else None
    code = detail.get("code") if isinstance(detail, dict) else None
    legacy = document.get("error_code") if isinstance(document, dict) else None
    if status == 200 and not code and legacy in (0, None):
        return None
    if not code and isinstance(document, dict):
        code = document.get("error_code_str") or None
    expected = CODES.get(code, (None, ""))[0] if code else None
    effective = expected or (status if status and status != 200 else legacy if isinstance(legacy, int) else status)
    message = (detail or {}).get("message") or (detail or {}).get("code_message") or (
        document.get("error_msg") if isinstance(document, dict) else None) or CODES.get(code, (0, ""))[1]
    text = f"{code or 'HTTP ' + str(status)}: {message or 'no message'} (HTTP {status})"
    kwargs = dict(status=status, code=code, response=document, retry_after=retry_after)
    if code == "AI_SERVICE_FLOW_RESTRICTION" or effective == 429:
        err = RateLimited(text, **kwargs)
        if code == "ERROR_NOT_ENOUGH_CREDITS":
            err.retryable = False
    elif effective in (401, 403):
        err = AuthError(text, **kwargs)
    elif effective == 422:
        err = FaceQualityError(text, **kwargs)
    elif effective and 400 <= effective < 500:
        err = ParameterError(text, **kwargs)
    else:
        err = ServerError(text, **kwargs)
    err.about_photo = about_photo(code, effective)
    return err


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


class _Secret:
    """A key held masked (XOR with a random pad): no attribute, repr, pickle or memory scan for the
    key's text finds it in clear; `reveal()` gives it back for the one header that needs it."""

    __slots__ = ("_pad", "_masked")

    def __init__(self, text: str):
        data = text.encode()
        self._pad = os.urandom(len(data))
        self._masked = bytes(a ^ b for a, b in zip(data, self._pad))

    def reveal(self) -> str:
        return bytes(a ^ b for a, b in zip(self._masked, self._pad)).decode()

    def redact(self, data: bytes) -> bytes:
        """`data` with every occurrence of the key replaced (a server that echoes the key in an error)."""
        key = self.reveal().encode()
        return data.replace(key, b"<redacted key>") if key in data else data

    def __repr__(self) -> str:
        return "<hidden>"

    def __reduce__(self):
        raise TypeError("an API key is not pickled")


def check_url(url: str) -> str:
    """`url` if it is an http(s) address with a host, else a `UsageError` naming it."""
    where = f"the API address {url!r} (url, --url or {URL_ENV})"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{where} is not an http:// or https:// address with a host")
    try:
        parts.port
    except ValueError as e:
        raise UsageError(f"{where} has a bad port ({e})") from None
    return url


class Client:
    """A Skin Analyze Pro client. The key comes from `api_key` or AILABAPI_API_KEY; the URL from `url`,
    SKINTRACK_API_URL, or the vendor's address. Pass `session` to reuse or instrument a requests.Session.

    Example
    -------
    >>> Client(api_key="k").url
    'https://www.ailabapi.com/api/portrait/analysis/skin-analysis-pro'
    """

    def __init__(self, api_key: str | None = None, url: str | None = None, session: requests.Session | None = None,
                 retry: RetryPolicy = RetryPolicy(), seed: int | None = None, pool_size: int = 64):
        key = api_key or os.environ.get(KEY_ENV)
        if not key:
            raise UsageError(f"no API key: pass api_key or set {KEY_ENV}")
        self._key = _Secret(key)
        self.url = check_url(url or os.environ.get(URL_ENV) or DEFAULT_URL)
        if session is None:  # requests keeps 10 connections per host by default: too few for a batch
            session = requests.Session()
            session.mount("https://", requests.adapters.HTTPAdapter(pool_maxsize=pool_size))
            session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=pool_size))
        self.session = session
        self.retry = retry
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Client(url={self.url!r}, api_key=<hidden>)"

    def __reduce__(self):
        raise TypeError("a Client holds an API key and is not pickled")

    def _sleep_for(self, attempt, retry_after):
        with self._lock:
            return self.retry.delay(attempt, retry_after, self._rng)

    def call(self, photo: Photo, params: Params = Params(), left: Photo | None = None,
             right: Photo | None = None) -> Reply:
        """POST one analysis; retries what can succeed later. Returns the final `Reply` on success;
        raises the classified `ApiError` (carrying the response) when the call failed for good."""
        if "jawline_info" in params.return_side_results and not (left and right):
            raise UsageError(f"{photo.path}: return_side_results=jawline_info needs a left and a right side image")
        files = {"image": (os.path.basename(photo.path) or "image.jpg", photo.data, "image/jpeg")}
        for name, side in (("left_side_image", left), ("right_side_image", right)):
            if side is not None:
                files[name] = (os.path.basename(side.path), side.data, "image/jpeg")
        started, errors = time.time(), []
        for attempt in range(self.retry.attempts):
            err, reply = self._try(files, params)
            if err is None:
                reply.attempts, reply.started_at, reply.errors = attempt + 1, started, errors
                return reply
            errors.append(f"{type(err).__name__}: {err}")
            if not err.retryable or attempt + 1 == self.retry.attempts:
                err.attempts = attempt + 1
                raise err
            time.sleep(self._sleep_for(attempt, err.retry_after))
        raise AssertionError("unreachable")

    def _try(self, files, params) -> tuple[ApiError | None, Reply | None]:
        t0 = time.perf_counter()
        try:
            r = self.session.post(self.url, headers={"ailabapi-api-key": self._key.reveal()}, files=files,
                                  data=params.form(), timeout=self.retry.timeout)
            body = self._key.redact(r.content)
        except requests.Timeout as e:
            return TransportError(f"timed out ({type(e).__name__})"), None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError) as e:
            return TransportError(f"connection failed or dropped ({type(e).__name__})"), None
        except requests.exceptions.InvalidURL as e:
            raise UsageError(f"the API address {self.url!r} cannot be used ({type(e).__name__})") from None
        seconds = time.perf_counter() - t0
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            kind = ServerError if r.status_code >= 500 else TransportError
            return kind(f"HTTP {r.status_code}: body is not JSON ({len(body)} bytes; truncated or not the API)",
                        status=r.status_code, retry_after=_retry_after(r.headers.get("Retry-After"))), None
        err = classify(r.status_code, document, _retry_after(r.headers.get("Retry-After")))
        if err is not None:
            err.body = body
            return err, None
        return None, Reply(body, r.status_code, document, 0, seconds, 0.0)
