"""`skintrack.Client`: one Skin Analyze Pro call, with retries that only retry what cannot have been billed.

Errors are classified by the documented `error_detail.code`, then by the HTTP status, then by the older
envelopes (`error_code`, `error_code_str`); see `skintrack.errors` for the tree.

What is retried (exponential backoff with full jitter, honouring `Retry-After`): a connection that could
not be made or broke before the request was sent whole (`TransportError`), and the service's own answers
429, 5xx and `AI_SERVICE_FLOW_RESTRICTION`. What never is: face-quality and parameter errors (final), and
a request sent whole whose answer was then lost, cut short, timed out, or replaced by a gateway's 502 or
504 page (`AnswerLost`; a gateway answers 502 when the service behind it did answer, only not well): the
service may have analysed and billed it, so sending it again could pay twice. The client knows "sent whole"
from its own connection, which marks the moment the last byte left.

The API key is sent only in the `ailabapi-api-key` header; it is checked (printable ASCII, no line
breaks) before it gets there, held masked, and redacted from anything a server echoes in any encoding
(as is, JSON-escaped, percent-encoded, base64).

Example
-------
>>> c = Client(api_key="sk-secret", url="http://127.0.0.1:9/x")
>>> "sk-secret" in repr(c)
False
"""
from __future__ import annotations

import base64
import email.utils
import math
import os
import random
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

import orjson
import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions

from ..tables.codes import CODES, about_photo
from ..errors import (AnswerLost, ApiError, AuthError, FaceQualityError, ParameterError, RateLimited, ServerError,
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
    longest_wait: float = 300.0  # a Retry-After beyond this ends the retries: no batch sleeps for hours unseen

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
    """Retry-After's seconds (a number, or an HTTP date), or None when it says nothing usable: a server's
    header is data, and "soon", "inf" or "1e400" must neither stop the batch nor put it to sleep for ever."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


REDACTED = b"<redacted key>"
MIN_KEY = 8  # shorter is no key (and its echoes could not be told from the answer's own text)


def check_key(key: str) -> str:
    """The key without surrounding whitespace (a file's last newline), or a `UsageError` saying what is
    wrong with it, never what it is: a header takes printable ASCII only, and a line break inside one
    would end it."""
    key = key.strip()
    if len(key) < MIN_KEY:
        raise UsageError(f"the API key is {len(key)} characters long; a key has at least {MIN_KEY} (check the "
                         "variable or the key file)")
    for i, c in enumerate(key, 1):
        if not "!" <= c <= "~":
            what = {"\n": "a line break", "\r": "a carriage return", "\t": "a tab", " ": "a space"}.get(
                c, f"the character U+{ord(c):04X}")
            raise UsageError(f"the API key holds {what} at character {i} of {len(key)}; an API key is printable "
                             "ASCII on one line (check the variable or the key file)")
    return key


def _encodings(key: bytes) -> list[bytes]:
    """The forms a server may echo the key in: as is, JSON-escaped (with `\\/` too), percent-encoded, and
    base64 (standard and URL-safe: the key alone, `key:` as in HTTP Basic, and the characters that only the
    key decides inside any longer base64 text, at each of the 3 byte offsets it may start at)."""
    text = key.decode()
    json = orjson.dumps(text)[1:-1]
    forms = {key, json, json.replace(b"/", b"\\/"), urllib.parse.quote(text, safe="").encode(),
             urllib.parse.quote_plus(text, safe="").encode()}
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        forms |= {encode(key).rstrip(b"="), encode(key + b":").rstrip(b"=")}
        for offset in range(3):
            core = encode(b"\0" * offset + key)[(4 * offset + 2) // 3:(4 * (offset + len(key))) // 3]
            if len(core) >= 8:
                forms.add(core)
    return sorted(forms, key=len, reverse=True)


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
        """`data` with the key replaced in every form a server may echo it in (`_encodings`; percent escapes
        in either case), and, in a JSON body, in every string once its escapes are undone."""
        patterns = [re.compile(re.escape(f), re.I if b"%" in f else 0) for f in _encodings(self.reveal().encode())]

        def scrub(raw: bytes) -> bytes:
            for pattern in patterns:
                raw = pattern.sub(REDACTED, raw)
            return raw

        data = scrub(data)
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            return data
        changed = False

        def walk(node):
            nonlocal changed
            if isinstance(node, dict):
                return {walk(k): walk(v) for k, v in node.items()}
            if isinstance(node, list):
                return [walk(v) for v in node]
            if isinstance(node, str):
                clean = scrub(node.encode("utf-8", "surrogatepass")).decode("utf-8", "replace")
                changed |= clean != node
                return clean
            return node

        doc = walk(doc)
        return orjson.dumps(doc) if changed else data

    def __repr__(self) -> str:
        return "<hidden>"

    def __reduce__(self):
        raise TypeError("an API key is not pickled")


_SENT = threading.local()  # per thread: whether the request in flight has left whole (None: unknown)


class _MarkSent:
    """A connection that marks when a request has been handed to the network whole (headers and body)."""

    def request(self, *args, **kwargs):
        _SENT.whole = False
        super().request(*args, **kwargs)
        _SENT.whole = True


class _HTTPConnection(_MarkSent, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_MarkSent, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class MarkingAdapter(requests.adapters.HTTPAdapter):
    """The client's transport: requests' own, with connections that say whether a request left whole."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


def _never_sent(e: Exception) -> bool:
    """Whether a failed request surely never reached the service (so sending it again cannot pay twice).
    The client's own connections say it exactly; a caller's session is judged by the error alone."""
    whole = getattr(_SENT, "whole", None)
    if whole is not None:
        return not whole
    reason = getattr(e.args[0], "reason", None) if e.args else None
    return isinstance(e, requests.ConnectTimeout) or isinstance(
        reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.NameResolutionError))


def check_url(url: str) -> str:
    """`url` if it is an http(s) address with a host (a bare host gets the API's path), else a `UsageError`.

    >>> check_url("http://127.0.0.1:8765")
    'http://127.0.0.1:8765/api/portrait/analysis/skin-analysis-pro'
    """
    where = f"the API address {url!r} (url, --url or {URL_ENV})"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{where} is not an http:// or https:// address with a host")
    try:
        parts.port
    except ValueError as e:
        raise UsageError(f"{where} has a bad port ({e})") from None
    if parts.path in ("", "/"):
        return urllib.parse.urlunsplit(parts._replace(path=urllib.parse.urlsplit(DEFAULT_URL).path))
    return url


class Client:
    """A Skin Analyze Pro client. The key comes from `api_key` or AILABAPI_API_KEY; the URL from `url`,
    SKINTRACK_API_URL, or the vendor's address. Pass `session` to reuse or instrument a requests.Session.

    Example
    -------
    >>> Client(api_key="test-key").url
    'https://www.ailabapi.com/api/portrait/analysis/skin-analysis-pro'
    """

    def __init__(self, api_key: str | None = None, url: str | None = None, session: requests.Session | None = None,
                 retry: RetryPolicy = RetryPolicy(), seed: int | None = None, pool_size: int = 64):
        key = api_key or os.environ.get(KEY_ENV)
        if not key:
            raise UsageError(f"no API key: set {KEY_ENV}, or give a key file (skintrack analyze --api-key-file)")
        self._key = _Secret(check_key(key))
        self.url = check_url(url or os.environ.get(URL_ENV) or DEFAULT_URL)
        if session is None:  # requests keeps 10 connections per host by default: too few for a batch
            session = requests.Session()
            session.mount("https://", MarkingAdapter(pool_maxsize=pool_size))
            session.mount("http://", MarkingAdapter(pool_maxsize=pool_size))
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
        """POST one analysis; retries what can succeed later and cannot have been billed. Returns the final
        `Reply` on success; raises the classified `ApiError` (carrying the response) when the call failed
        for good, or `AnswerLost` when it may have been billed but no answer came back."""
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
            wait = self._sleep_for(attempt, err.retry_after) if err.retryable else 0.0
            if not err.retryable or attempt + 1 == self.retry.attempts or wait > self.retry.longest_wait:
                if wait > self.retry.longest_wait:
                    err.args = (f"{err} (the service asks to wait {wait:.0f} s before trying again: not waited)",)
                err.attempts = attempt + 1
                raise err
            time.sleep(wait)
        raise AssertionError("unreachable")

    def _try(self, files, params) -> tuple[ApiError | None, Reply | None]:
        t0 = time.perf_counter()
        _SENT.whole = None
        try:
            r = self.session.post(self.url, headers={"ailabapi-api-key": self._key.reveal()}, files=files,
                                  data=params.form(), timeout=self.retry.timeout)
            body = self._key.redact(r.content)
        except requests.exceptions.InvalidURL as e:
            raise UsageError(f"the API address {self.url!r} cannot be used ({type(e).__name__})") from None
        except requests.RequestException as e:  # only the type: requests' texts may quote headers
            if _never_sent(e):
                return TransportError(f"no connection, nothing sent ({type(e).__name__})"), None
            return AnswerLost(f"the request was sent but its answer was lost ({type(e).__name__}); it may have "
                              "been billed"), None
        seconds = time.perf_counter() - t0
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            retry_after = _retry_after(r.headers.get("Retry-After"))
            what = f"HTTP {r.status_code}: the body is not JSON ({len(body)} bytes"
            # an answer cut short, a gateway that had an answer it could not pass on (502) or gave up waiting (504)
            if r.status_code in (200, 502, 504):
                return AnswerLost(f"{what}; cut short or not the API's); it may have been billed",
                                  status=r.status_code, body=body), None
            if r.status_code >= 500:
                return ServerError(f"{what}; not the API's own answer)", status=r.status_code,
                                   retry_after=retry_after), None
            return classify(r.status_code, {}, retry_after), None
        err = classify(r.status_code, document, _retry_after(r.headers.get("Retry-After")))
        if err is not None:
            err.body = body
            return err, None
        if not (isinstance(document, dict) and isinstance(document.get("result"), dict)):  # every version has one
            return AnswerLost(f"HTTP {r.status_code}: JSON that is no analysis (no result object; not the API's "
                              "own answer); it may have been billed", status=r.status_code, body=body), None
        return None, Reply(body, r.status_code, document, 0, seconds, 0.0)
