"""`skintrack emulate`: a local stand-in for the Skin Analyze Pro API, for tests, demos and benchmarks.

It listens on 127.0.0.1 only and speaks the same contract: a multipart POST with the key in the
`ailabapi-api-key` header (401 otherwise), the documented error envelopes and codes for bad photos and
parameters, and SIMULATED current-format responses derived deterministically from the photo's bytes,
with valid base64 face maps of the photo's size, marks and side results when asked. Faults can be
injected: latency (median 2.3 s by default, log-normal spread), shares of 429/503/500 answers and of any
documented code (answered before any analysis: never billed), and answers lost after the analysis: a
connection closed without a reply (`share_drop`), a body cut in half (`share_truncate`), a gateway's HTML 502
page in its place (`share_gateway`: the service behind the gateway did the work), or a 200 whose JSON holds
no analysis (`share_hollow`).

The model can change under a study, as the real one may: `generation` answers in an older version's shape
(`skintrack.tables.generations.downgrade`), and `shifts` change the model after a number of billed calls:
``("score.wrinkle", 27, 40)`` adds 27 to that metric from the 41st billed call on, ``("generation",
"v1.6.6", 40)`` answers in v1.6.6's shape from then on. Every answer carries its own request id, as the
real service's do.

The billing ledger is the service's view of the money: a call is billed the moment its analysis has
produced an answer, whether or not that answer reaches the client. `stats()` (also at GET
/_emulator/stats) gives the calls received, the calls billed (in all, per photo, and the ledger in order:
photo SHA-256, time, and what became of the answer: sent, dropped, truncated, gateway or hollow).

Example
-------
>>> with Emulator(EmulatorConfig(api_key="k", latency=0)) as emu:
...     emu.url.startswith("http://127.0.0.1:")
True
"""
from __future__ import annotations

import collections
import functools
import hashlib
import io
import math
import random
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from PIL import Image, ImageDraw, ImageStat, UnidentifiedImageError

from ..tables.codes import CODES
from ..tables.limits import MAX_BYTES, MAX_SIDE, MIN_SIDE
from .request import COLORS, MARKS, MAPS, SIDE_RESULTS
from ..tables.schema import WRINKLE_REGIONS
from ..errors import UsageError, finite
from ..sample.simulate import Latent, build_response
from ..tables.generations import NAMES, downgrade

PATH = "/api/portrait/analysis/skin-analysis-pro"
JPEG_MAPS = {"red_area", "brown_area", "texture_enhanced_bw"}
# return_marks names of the wrinkle lists that are not "<region>_list"
REQUEST_MARK = {"forehead": "forehead_wrinkle_list", "glabella": "glabella_wrinkle_list",
                "left_eye": "left_eye_wrinkle_list", "right_eye": "right_eye_wrinkle_list"}


@dataclass
class EmulatorConfig:
    """What the emulator accepts and which faults it injects (shares are probabilities per call)."""

    api_key: str = "emulator-key"
    latency: float = 2.3  # median seconds per call; 0 for none
    latency_spread: float = 0.15  # sigma of the log-normal around the median; 0 for a fixed latency
    share_429: float = 0.0
    share_503: float = 0.0
    share_500: float = 0.0
    share_drop: float = 0.0  # analyse and bill, then close the connection without answering
    share_truncate: float = 0.0  # analyse and bill, announce the full length, send half the body, close
    share_gateway: float = 0.0  # analyse and bill, then a gateway's HTML 502 page instead of the answer
    share_hollow: float = 0.0  # analyse and bill, then answer 200 with a JSON object that holds no result
    codes: dict = field(default_factory=dict)  # documented code -> share, e.g. {"ERROR_NO_FACE_IN_FILE": 0.1}
    retry_after: float = 1.0  # seconds, sent with 429
    generation: str = "v1.7.6"  # the API version whose shape the answers have
    shifts: tuple = ()  # (metric key or "generation", delta or version, after this many billed calls), ...
    echo_key: str = ""  # a careless server repeats the key it was sent in its 401: as is ("plain"), "json-slash"
    # (a JSON encoder that writes / as \/), "percent", "base64" (of `key:`, as HTTP Basic), "unicode" (\uXXXX)
    seed: int = 0

    def __post_init__(self):  # a latency below 0, a share of 1.5 or NaN: silently something else than asked
        for name in ("latency", "latency_spread", "retry_after"):
            finite(getattr(self, name), name, least=0)
        shares = {f"share_{k}": getattr(self, f"share_{k}")
                  for k in ("429", "503", "500", "drop", "truncate", "gateway", "hollow")}
        for name, share in {**shares, **self.codes}.items():
            if not 0 <= finite(share, name) <= 1:
                raise UsageError(f"{name} must be a share between 0 and 1, not {share!r}")


class Emulator:
    """The emulator's HTTP server, run in a background thread (a context manager)."""

    def __init__(self, config: EmulatorConfig | None = None, port: int = 0):
        self.config = config = config or EmulatorConfig()
        self._rng = random.Random(config.seed)
        self._lock = threading.Lock()
        self.calls = 0
        self.billed = collections.Counter()
        self.ledger: list[dict] = []
        self.statuses = collections.Counter()
        self.latency_total = 0.0
        handler = functools.partial(_Handler, self)
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.server.daemon_threads = True
        self._thread = None

    @property
    def base(self) -> str:
        """The emulator's address (SKINTRACK_API_URL takes it as it is; the client adds the API's path)."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def url(self) -> str:
        """The full address of the emulated endpoint."""
        return f"{self.base}{PATH}"

    def start(self) -> Emulator:
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def stats(self) -> dict:
        """Calls received, calls billed (in all, per photo SHA-256, and the ledger in order), answers by HTTP
        status."""
        with self._lock:
            return {"calls": self.calls, "billed": sum(self.billed.values()), "billed_by_photo": dict(self.billed),
                    "ledger": [dict(e) for e in self.ledger], "statuses": dict(self.statuses),
                    "latency_total": self.latency_total}

    def bill(self, photo_sha: str, answer: str) -> None:
        """Enter one billed call in the ledger (its answer: sent, dropped, truncated, gateway or hollow)."""
        with self._lock:
            self.billed[photo_sha] += 1
            self.ledger.append({"n": len(self.ledger) + 1, "photo_sha256": photo_sha, "at": time.time(),
                                "answer": answer})

    def model(self) -> tuple[str, dict]:
        """The generation and the metric shifts in force for the next analysis (after its billed calls)."""
        with self._lock:
            billed = len(self.ledger)
        generation, deltas = self.config.generation, {}
        for what, value, after in self.config.shifts:
            if billed >= after:
                if what == "generation":
                    generation = value
                else:
                    deltas[what] = deltas.get(what, 0.0) + float(value)
        return generation, deltas

    def _draw(self) -> float:
        with self._lock:
            self.calls += 1
            return self._rng.random()

    def _latency(self) -> float:
        if not self.config.latency:
            return 0.0
        with self._lock:
            seconds = self.config.latency * math.exp(self._rng.gauss(0, self.config.latency_spread))
            self.latency_total += seconds
            return seconds


def _envelope(code: str, message: str) -> tuple[int, bytes]:
    status, summary = CODES[code]
    return status, orjson.dumps({"request_id": f"emulator-{time.time_ns()}", "log_id": "emulator",
                                 "error_code": status, "error_detail": {"status_code": status, "code": code,
                                                                         "code_message": summary, "message": message}})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def __init__(self, emulator: Emulator, *args, **kwargs):
        self.emulator = emulator
        super().__init__(*args, **kwargs)

    def log_message(self, *args):  # quiet: the emulator is used in tests and benchmarks
        pass

    def _send(self, status: int, body: bytes, headers=None, truncate=False, content_type="application/json"):
        time.sleep(max(0.0, getattr(self, "_wake", 0.0) - time.monotonic()))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if truncate else body)
        if truncate:
            self.close_connection = True
        with self.emulator._lock:
            self.emulator.statuses[status] += 1

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.path == "/_emulator/stats":
            return self._send(200, orjson.dumps(self.emulator.stats(), option=orjson.OPT_NON_STR_KEYS))
        return self._send(*_envelope("ERROR_RESOURCE_NOT_FOUND", f"no such path {self.path}"))

    def do_POST(self):  # noqa: N802 - http.server's naming
        emu, cfg = self.emulator, self.emulator.config
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.split("?")[0] != PATH:
            return self._send(*_envelope("ERROR_RESOURCE_NOT_FOUND", f"no such path {self.path}"))
        draw = emu._draw()
        wake = time.monotonic() + emu._latency()  # the answer leaves at the call's latency, not after it
        self._wake = wake
        if self.headers.get("ailabapi-api-key") != cfg.api_key:
            status, body = _envelope("ERROR_APPLICATIONS_NOT_EXISTS", "invalid or missing ailabapi-api-key ECHO")
            return self._send(status, body.replace(b"ECHO", _echo(self.headers.get("ailabapi-api-key") or "",
                                                                  cfg.echo_key)))
        edge = 0.0
        for share, status, code in ((cfg.share_429, 429, "EXCEEDING_LIMITS"), (cfg.share_503, 503, "AI_SERVICE_FLOW_RESTRICTION"),
                                    (cfg.share_500, 500, "SERVICE_INTERNAL_ERROR")):
            edge += share
            if draw < edge:
                headers = {"Retry-After": str(cfg.retry_after)} if status == 429 else None
                return self._send(_envelope(code, "injected fault")[0], _envelope(code, "injected fault")[1], headers)
        lost = None
        for answer, share in (("dropped", cfg.share_drop), ("truncated", cfg.share_truncate),
                              ("gateway", cfg.share_gateway), ("hollow", cfg.share_hollow)):
            if lost is None and draw < edge + share:
                lost = answer
            edge += share
        for code, share in cfg.codes.items():
            edge += share
            if draw < edge:
                return self._send(*_envelope(code, "injected documented error"))
        fields = _multipart(self.headers.get("Content-Type", ""), raw)
        if fields is None or "image" not in fields:
            return self._send(*_envelope("MISSING_PARAMETERS", "image is required"))
        status, body, photo_sha = _analyse(fields, emu.model(), emu.calls)
        if status == 200:  # the analysis is done: billed, whatever becomes of the answer
            emu.bill(photo_sha, lost or "sent")
        if lost == "dropped":
            time.sleep(max(0.0, self._wake - time.monotonic()))
            self.close_connection = True
            return None
        if lost == "gateway":
            return self._send(502, GATEWAY_PAGE, content_type="text/html")
        if lost == "hollow":
            return self._send(200, b'{"status": "ok"}')
        self._send(status, body, truncate=lost == "truncated")


GATEWAY_PAGE = (b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center>"
                b"</body></html>")  # nginx's own


def _echo(key: str, how: str) -> bytes:
    """The key as a careless server would repeat it inside a JSON string (empty when it does not)."""
    import base64
    import urllib.parse

    return {"": b"", "plain": key.encode(), "json-slash": key.replace("/", "\\/").encode(),
            "percent": urllib.parse.quote(key, safe="").encode(),
            "base64": b"Basic " + base64.b64encode(f"{key}:".encode()),
            "unicode": "".join(f"\\u{ord(c):04x}" for c in key).encode()}[how]


def _multipart(content_type: str, raw: bytes) -> dict | None:
    """Parse multipart/form-data into {name: bytes} (the emulator's own small parser: fast on big files)."""
    if not content_type.startswith("multipart/form-data") or "boundary=" not in content_type:
        return None
    boundary = b"--" + content_type.split("boundary=", 1)[1].split(";")[0].strip().strip('"').encode()
    fields = {}
    for part in raw.split(boundary)[1:]:
        if part.startswith(b"--"):
            break
        head, sep, body = part.partition(b"\r\n\r\n")
        if not sep:
            return None
        disposition = next((line for line in head.decode("latin-1").split("\r\n")
                            if line.lower().startswith("content-disposition")), "")
        name = disposition.split('name="', 1)[1].split('"', 1)[0] if 'name="' in disposition else None
        if name is None:
            return None
        fields[name] = body[:-2] if body.endswith(b"\r\n") else body
    return fields


def _check_image(data: bytes, name: str):
    """(image, None) or (None, (code, message)) by the documented rules."""
    if len(data) > MAX_BYTES:
        return None, ("FILE_SIZE_EXCEEDS_LIMIT", f"{name} is larger than 8 MB")
    try:
        img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError):
        return None, ("FILE_DECODING_FAILURE", f"{name} cannot be decoded")
    if img.format != "JPEG":
        return None, ("UNSUPPORTED_FILE_TYPES", f"{name} is {img.format}, not JPEG")
    w, h = img.size
    if w <= MIN_SIDE or h <= MIN_SIDE:
        return None, ("ERROR_LOW_RESOLUTION", f"{name} is {w}x{h}, not larger than 200x200")
    if w >= MAX_SIDE or h >= MAX_SIDE:
        return None, ("ERROR_HIGH_RESOLUTION", f"{name} is {w}x{h}, not smaller than 4096x4096")
    return img, None


def _split(fields, name, allowed):
    values = [v for v in (fields.get(name) or b"").decode().split(",") if v]
    bad = [v for v in values if v not in allowed]
    return values, bad


def parse_shift(text: str) -> tuple:
    """``METRIC=DELTA@N`` or ``generation=VERSION@N`` as a shift of `EmulatorConfig.shifts`.

    >>> parse_shift("score.wrinkle=27@40")
    ('score.wrinkle', 27.0, 40)
    """
    from ..tables.catalog import metric_info
    from ..tables.generations import NAMES

    what, sep, rest = text.partition("=")
    value, at, after = rest.rpartition("@")[0], "@" in rest, rest.rpartition("@")[2]
    if not (sep and at and after.isdigit()):
        raise UsageError(f"--model-shift {text!r}: write METRIC=DELTA@N (e.g. score.wrinkle=27@40) or "
                         "generation=VERSION@N")
    if what == "generation":
        if value not in NAMES:
            raise UsageError(f"--model-shift {text!r}: {value!r} is not one of {', '.join(NAMES)}")
        return what, value, int(after)
    try:
        metric_info(what)
        return what, float(value), int(after)
    except KeyError:
        raise UsageError(f"--model-shift {text!r}: unknown metric {what!r} (see `skintrack metrics`)") from None
    except ValueError:
        raise UsageError(f"--model-shift {text!r}: {value!r} is not a number") from None


def _shifted(doc: dict, deltas: dict) -> None:
    """Add each delta to its metric's value in the response (clipped to the documented range; whole numbers
    stay whole)."""
    from ..tables.catalog import metric_info

    for key, delta in deltas.items():
        info = metric_info(key)
        for path in info["paths"]:
            *parents, leaf = path.split(".")
            node = doc
            for part in parents:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict) and isinstance(node.get(leaf), (int, float)):
                lo, hi = (x if x is not None and not math.isnan(x) else sign * math.inf
                          for x, sign in ((info["lo"], -1), (info["hi"], 1)))
                value = min(max(node[leaf] + delta, lo), hi)
                node[leaf] = round(value) if isinstance(node[leaf], int) else value
                break


def _analyse(fields: dict, model=("v1.7.6", {}), call: int = 0) -> tuple[int, bytes, str]:
    data = fields["image"]
    sha = hashlib.sha256(data).hexdigest()
    img, problem = _check_image(data, "image")
    if problem:
        return (*_envelope(*problem), sha)
    maps, bad_maps = _split(fields, "return_maps", MAPS)
    marks, bad_marks = _split(fields, "return_marks", MARKS)
    sides, bad_sides = _split(fields, "return_side_results", SIDE_RESULTS)
    if bad_maps or bad_marks or bad_sides:
        return (*_envelope("ERROR_INVALID_PARAMETER", f"unknown values: {bad_maps + bad_marks + bad_sides}"), sha)
    if fields.get("roi_outline_color"):
        try:
            colors = orjson.loads(fields["roi_outline_color"])
            assert isinstance(colors, dict) and set(colors) <= set(COLORS)
        except (orjson.JSONDecodeError, AssertionError):
            return (*_envelope("ERROR_INVALID_PARAMETER_FORMAT", "roi_outline_color is not valid"), sha)
    if "jawline_info" in sides and not (fields.get("left_side_image") and fields.get("right_side_image")):
        return (*_envelope("MISSING_PARAMETERS", "jawline_info needs left_side_image and right_side_image"), sha)
    size = img.size
    img.draft("L", (size[0] // 8, size[1] // 8))  # decode at 1/8 scale: enough to see a blank photo
    try:
        flat = ImageStat.Stat(img.convert("L")).stddev[0] < 3
    except OSError:
        return (*_envelope("FILE_DECODING_FAILURE", "image cannot be decoded"), sha)
    if flat:
        return (*_envelope("ERROR_NO_FACE_IN_FILE", "pic not has face"), sha)
    rng = random.Random(sha)
    doc = build_response(Latent.draw(rng), rng, size=size, request_id=f"SIMULATED-emulator-{sha[:16]}-{call}")
    doc["log_id"] = f"emulator-{sha[:8]}"
    result = doc["result"]
    if maps:
        result["face_maps"] = {m: _map(m, size) for m in maps if not m.startswith(("left_", "right_"))}
    _add_marks(result, marks, rng, size)
    if "jawline_info" in sides:
        for side in ("left", "right"):
            side_img, problem = _check_image(fields[f"{side}_side_image"], f"{side}_side_image")
            doc[f"{side}_side_result"] = _side_result(side, side_img, rng, f"{side}_roi_outline_map" in maps)
    generation, deltas = model
    _shifted(doc, deltas)
    if generation != NAMES[-1]:
        doc = downgrade(doc, generation)
    return 200, orjson.dumps(doc), sha


@functools.lru_cache(maxsize=64)
def _map(name: str, size: tuple) -> str:
    """A valid base64 map of the photo's size (JPEG on white or transparent PNG, as the real ones)."""
    import base64

    if name in JPEG_MAPS:
        img = Image.new("RGB", size, "white")
        ImageDraw.Draw(img).ellipse((size[0] * 0.3, size[1] * 0.3, size[0] * 0.7, size[1] * 0.7), fill=(220, 120, 110))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=80)
    else:
        img = Image.new("RGBA", size, (0, 0, 0, 0))
        ImageDraw.Draw(img).ellipse((size[0] * 0.35, size[1] * 0.35, size[0] * 0.65, size[1] * 0.65),
                                    outline=(0, 120, 255, 255), width=3)
        buf = io.BytesIO()
        img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _points(rng, size, n):
    w, h = size
    cx, cy, r = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h, rng.uniform(0.02, 0.08) * min(w, h)
    return [{"x": round(cx + r * math.cos(2 * math.pi * i / n)), "y": round(cy + r * math.sin(2 * math.pi * i / n))}
            for i in range(n)]


def _add_marks(result: dict, marks: list, rng, size) -> None:
    for region in WRINKLE_REGIONS:
        if REQUEST_MARK.get(region, f"{region}_list") in marks:
            info = result[f"{region}_wrinkle_info"]
            info[f"{region}_wrinkle_list"] = [
                {"wrinkle_depth": round(rng.uniform(0.3, 0.8), 6), "wrinkle_length": n,
                 "wrinkle_coord": _points(rng, size, n)}
                for n in (rng.randint(8, 40) for _ in range(info["wrinkle_deep_num"] + info["wrinkle_shallow_num"]))]
    if "wrinkle_mark" in marks:
        result["wrinkle_mark"] = {f"{k}_wrinkle_outline": _points(rng, size, 64) for k in (
            "left_cheek", "right_cheek", "head", "left_nasolabial", "right_nasolabial", "glabella", "left_crowsfeet",
            "right_crowsfeet", "left_mouth", "right_mouth", "left_eye", "right_eye")}
    if "dark_circle_outline" in marks:
        result["dark_circle_outline"] = {f"{s}_dark_circle_outline": _points(rng, size, 60) for s in ("left", "right")}
    for mark in ("sensitivity_mark", "melanin_mark"):
        if mark in marks:
            result[mark] = {"polygon": [_points(rng, size, rng.randint(4, 30)) for _ in range(rng.randint(5, 40))]}
    if "cheekbone_mark" in marks:
        result["cheekbone_mark"] = {f"{s}_cheekbone_mark": _points(rng, size, 64) for s in ("left", "right")}


def _side_result(side: str, img, rng, with_map: bool) -> dict:
    quality = 1 if img is not None else 4
    info = {f"{side}_jawline_quality": quality}
    if quality == 1:
        angle = round(rng.uniform(110, 130), 2)
        info.update({f"{side}_jawline_angle": angle, f"{side}_jawline_mark": _points(rng, img.size, 20),
                     f"{side}_jawline_angle_level": 0 if 116 <= angle <= 120 else 1})
    out = {f"{side}_jawline_info": info}
    if img is not None:
        n = rng.randint(0, 3)
        boxes = {"rectangle": [{"left": 10 * i, "top": 10 * i, "width": 12, "height": 12} for i in range(n)],
                 "confidence": [0.5] * n, "polygon": [_points(rng, img.size, 5) for _ in range(n)], "count": n}
        empty = {"rectangle": [], "confidence": [], "polygon": [], "count": 0}
        out[f"{side}_acne_info"] = {"score": max(30, 100 - 3 * n), "acne": boxes, "acne_pustule": empty,
                                    "acne_nodule": empty, "acne_mark": empty, "closed_comedones": empty}
        out[f"{side}_melanin_info"] = {"mole": empty, "brown_spot": empty}
        if with_map:
            out[f"{side}_face_maps"] = {f"{side}_roi_outline_map": _map("roi_outline_map", img.size)}
    return out
