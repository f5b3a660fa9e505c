"""The fake Instantly over real HTTP on 127.0.0.1, for end-to-end runs and benchmarks.

    python -m tests.support.instantly_server --leads 1000 [--port 8765] [--campaigns 3]
        [--interested-every 50] [--replies 20] [--api-key KEY]

It prints `listening on http://127.0.0.1:PORT` once ready, and serves until stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.instantly_fake import API_KEY, FakeInstantly, populate


def handler_for(fake: FakeInstantly) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            url = f"http://{self.headers.get('Host', '127.0.0.1')}{self.path}"
            status, headers, text = fake.handle(self.command, url, dict(self.headers), body)
            data = text.encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            """Quiet: a benchmark makes thousands of calls."""

    return Handler


@contextlib.contextmanager
def serving(fake: FakeInstantly, port: int = 0) -> Iterator[str]:
    """Serve `fake` on 127.0.0.1 in a thread; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler_for(fake))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive(), "the fake Instantly server's thread did not stop"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=1000)
    parser.add_argument("--campaigns", type=int, default=1)
    parser.add_argument("--interested-every", type=int, default=0)
    parser.add_argument("--replies", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=API_KEY)
    parser.add_argument(
        "--no-validate", action="store_true", help="skip OpenAPI checks (faster for big runs)"
    )
    args = parser.parse_args(argv)
    fake = FakeInstantly(api_key=args.api_key, validate=not args.no_validate)
    # Replies from yesterday: inside the first run's look-back, whatever today is.
    yesterday = datetime.now(UTC) - timedelta(days=1)
    populate(fake, args.leads, args.campaigns, args.interested_every, args.replies, yesterday)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(fake))
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        print(f"served {len(fake.calls)} calls", file=sys.stderr)


if __name__ == "__main__":
    main()
