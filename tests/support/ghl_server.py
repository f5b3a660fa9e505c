"""FakeGHL over real HTTP, for tests that run the bridge as a process and for benchmarks.

    python -m tests.support.ghl_server --port 8765 [--rate-limit 100/10] [--daily-limit N]
        [--day-seconds S] [--location ID:TOKEN[:NAME] ...]

Control endpoints (JSON, never recorded as GHL calls). Those that set a location up or break it
take "location": "<id>" in the body (or ?location=<id> on GET /_fake/state); without it they
act on the default location (the one given by --location-id):
    GET  /_fake/state          contacts, notes, opportunities, counts per route, spec_errors,
                               violations, and every location's own under "locations"
    POST /_fake/faults         {"status": 503, "seconds": 5, "retry_after": 2}
                               or {"fail_next": 3, "status": 500}
    POST /_fake/reset          forget contacts, calls, faults and violations (all locations)
    POST /_fake/locations      {"location_id": "loc_b", "token": "tok-b", "name": "B",
                                "rate_limit": [100, 10], "daily_limit": 1000,
                                "day_seconds": 30} (limits and day length optional)
    POST /_fake/custom-fields  {"field_key": "contact.icebreaker", "name": "Icebreaker"}
    POST /_fake/workflows      {"name": "Follow-up"}
    POST /_fake/pipelines      {"name": "Instantly", "stages": ["Replied", "Interested"]}
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.ghl_fake import DAILY_LIMIT, DAY_SECONDS, FakeGHL, GHLLocation

CONTROL_PREFIX = "/_fake/"


class FakeGHLServer:
    """Serves a FakeGHL on 127.0.0.1 from a background thread.

    Used as a context manager around a fake with several locations, it fails the test on
    leaving if any request crossed locations (FakeGHL.assert_no_cross_location_calls).
    """

    def __init__(self, fake: FakeGHL | None = None, port: int = 0, host: str = "127.0.0.1"):
        self.fake = fake or FakeGHL()
        self.host = host
        self.port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("server not started")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> str:
        """Start serving; returns the base URL (with the real port when port was 0)."""
        if self._server is not None:
            return self.url
        server = ThreadingHTTPServer((self.host, self.port), _handler_for(self.fake))
        server.daemon_threads = True  # a stuck keep-alive connection must not block stop()
        self._server = server
        # A short poll interval keeps stop() (and so every test using the server) quick.
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="fake-ghl-http", daemon=True
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        thread, self._server, self._thread = self._thread, None, None
        if thread is not None:
            thread.join(timeout=5)
            assert not thread.is_alive(), "the fake GHL server's thread did not stop"

    def __enter__(self) -> FakeGHLServer:
        self.start()
        return self

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        self.stop()
        # Not over an exception already on its way: that one says more about the failure.
        if exc_type is None and len(self.fake.locations) > 1:
            self.fake.assert_no_cross_location_calls()


def _handler_for(fake: FakeGHL) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.1 keeps connections open, as requests.Session and GHL both do.
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; with Nagle on, each answer on a kept-alive
        # connection waits for a delayed ACK (~40 ms), which would swamp any benchmark.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            self._serve()

        do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if len(body) < length:
                # The client went away mid-request (a worker killed with SIGKILL): GHL never
                # acts on a request it did not receive whole, so the fake does not either.
                self.close_connection = True
                return
            if parts.path.startswith(CONTROL_PREFIX):
                query = parse_qs(parts.query)
                status, answer = _control(fake, self.command, parts.path, query, body)
                headers: dict[str, str] = {}
            else:
                status, headers, answer = fake.handle(
                    self.command,
                    parts.path,
                    parse_qs(parts.query, keep_blank_values=True),
                    dict(self.headers.items()),
                    body,
                )
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # tests read fake.calls; access logs would only add noise

    return Handler


def _control(
    fake: FakeGHL, method: str, path: str, query: dict[str, list[str]], body: bytes
) -> tuple[int, dict[str, Any]]:
    try:
        data = json.loads(body) if body.strip() else {}
    except ValueError:
        return 400, {"error": "body is not JSON"}
    if not isinstance(data, dict):
        return 400, {"error": "body must be a JSON object"}
    action = f"{method} {path.rstrip('/')}"
    try:
        loc = _location(fake, data.get("location", (query.get("location") or [None])[0]))
        if action == "GET /_fake/state":
            return 200, fake.snapshot() if loc is fake.default else loc.snapshot()
        if action == "POST /_fake/faults":
            _set_fault(loc, data)
            return 200, {"ok": True}
        if action == "POST /_fake/reset":
            fake.reset()
            return 200, {"ok": True}
        if action == "POST /_fake/locations":
            added = _add_location(fake, data)
            return 200, {"location_id": added.location_id, "name": added.name}
        if action == "POST /_fake/custom-fields":
            field_id = loc.add_custom_field(
                data["field_key"],
                data["name"],
                data.get("data_type", "TEXT"),
                data.get("model", "contact"),
            )
            return 200, {"id": field_id}
        if action == "POST /_fake/workflows":
            return 200, {"id": loc.add_workflow(data["name"])}
        if action == "POST /_fake/pipelines":
            return 200, loc.add_pipeline(data["name"], data["stages"])
    except (KeyError, TypeError, ValueError) as exc:
        return 400, {"error": f"bad request: {exc!r}"}
    return 404, {"error": f"no control endpoint {action}"}


def _add_location(fake: FakeGHL, data: dict[str, Any]) -> GHLLocation:
    """{"location_id", "token", "name"?, "rate_limit"?: [requests, seconds] or null,
    "daily_limit"?, "day_seconds"?}: limits not given are the default location's."""
    limits: dict[str, Any] = {}
    if "rate_limit" in data:
        rate = data["rate_limit"]
        limits["rate_limit"] = None if rate is None else (int(rate[0]), float(rate[1]))
    if "daily_limit" in data:
        limits["daily_limit"] = int(data["daily_limit"])
    if "day_seconds" in data:
        limits["day_seconds"] = float(data["day_seconds"])
    return fake.add_location(
        str(data["location_id"]), str(data["token"]), data.get("name"), **limits
    )


def _location(fake: FakeGHL, location_id: Any) -> GHLLocation:
    """The location a control request names; the default one when it names none."""
    if location_id is None:
        return fake.default
    try:
        return fake.location(str(location_id))
    except KeyError:
        raise ValueError(f"no location {location_id}") from None


def _set_fault(loc: GHLLocation, data: dict[str, Any]) -> None:
    status = int(data["status"])
    if "fail_next" in data:
        loc.fail_next(int(data["fail_next"]), status, data.get("headers"), data.get("body"))
    elif "seconds" in data:
        retry_after = data.get("retry_after")
        loc.fail_for(
            float(data["seconds"]), status, None if retry_after is None else float(retry_after)
        )
    else:
        raise ValueError('give "fail_next" or "seconds"')


def _parse_rate_limit(text: str) -> tuple[int, float]:
    requests, _, seconds = text.partition("/")
    return int(requests), float(seconds or 10)


def _positive_seconds(text: str) -> float:
    seconds = float(text)
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"give seconds above 0, not {text}")
    return seconds


def _parse_location(text: str) -> tuple[str, str, str | None]:
    location_id, _, rest = text.partition(":")
    token, _, name = rest.partition(":")
    if not location_id or not token:
        raise argparse.ArgumentTypeError("give ID:TOKEN or ID:TOKEN:NAME")
    return location_id, token, name or None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a fake GoHighLevel API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--rate-limit",
        type=_parse_rate_limit,
        metavar="N/SECONDS",
        help="e.g. 100/10: answer 429 past N requests in any SECONDS window",
    )
    parser.add_argument(
        "--daily-limit", type=int, default=DAILY_LIMIT, help="requests a day per location"
    )
    parser.add_argument(
        "--day-seconds",
        type=_positive_seconds,
        default=DAY_SECONDS,
        metavar="S",
        help="length of GHL's day, from its first request (short: see a spent day come back)",
    )
    parser.add_argument("--location-id", default="loc_test")
    parser.add_argument("--token", default="ghl-test-token")
    parser.add_argument(
        "--location",
        type=_parse_location,
        action="append",
        default=[],
        metavar="ID:TOKEN[:NAME]",
        help="another location (sub-account) with its own token; repeat for more",
    )
    parser.add_argument(
        "--no-validate", action="store_true", help="do not check requests against the GHL spec"
    )
    args = parser.parse_args(argv)

    fake = FakeGHL(
        args.location_id,
        args.token,
        not args.no_validate,
        args.rate_limit,
        daily_limit=args.daily_limit,
        day_seconds=args.day_seconds,
    )
    for location_id, token, name in args.location:
        fake.add_location(location_id, token, name)
    server = FakeGHLServer(fake, port=args.port)
    url = server.start()
    print(f"Fake GHL listening on {url}  (state: {url}/_fake/state)")
    print("Point the bridge at it:")
    print(f"  export GHL_BASE_URL={url}")
    print(f"  export GHL_TOKEN={args.token}")
    print(f"  export GHL_LOCATION_ID={args.location_id}")
    for location_id, _, _ in args.location:
        print(f"  (and location {location_id} with the token given for it)")
    print("Ctrl-C to stop.", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
