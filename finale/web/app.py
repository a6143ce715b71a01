"""The live dashboard: one page with the traffic of the last 15 minutes and its alerts.

    python finale/dashboard.py                      # http://127.0.0.1:8080/
    python finale/dashboard.py --port 8081 --bootstrap-servers HOST:9092

A Kafka thread (feed.py) keeps the last minutes of window metrics (topic http-metrics, written by
the analyzer) and the alerts (topic alerts) in memory (state.py); the page (static/) receives the
whole picture as server-sent events whenever it changes, and never reloads.

Endpoints, all GET (HEAD), none changes anything:
- `/`: the page; `/static/...`: its script, style and the vendored chart library (uPlot);
- `/events`: server-sent events, one JSON snapshot (state.DashboardState.snapshot) per change;
- `/api/state`: the same snapshot, once.

Every response carries a Content-Security-Policy that allows scripts, styles and connections from
the page's own origin only (no inline script, no eval, no other site), so a string from a log line
can never run as code, even if a bug ever put it into markup; the page sets every data string with
textContent anyway.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
from pathlib import Path

from finale.common.cli import (
    BOOTSTRAP_HELP,
    DEFAULT_BOOTSTRAP,
    HelpFormatter,
    OneLineErrorParser,
    duration_seconds,
    is_interval,
)
from finale.common.topics import ALERTS, METRICS
from finale.web.state import DEFAULT_SPAN_S, DashboardState

STATIC = Path(__file__).resolve().parent / "static"
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8080
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
# Least time between two events of one connection: a burst of records is one update.
MIN_EVENT_INTERVAL_S = 0.1
KEEPALIVE_S = 15.0


class SecurityHeaders:
    """ASGI middleware: SECURITY_HEADERS on every HTTP response (pages, files, events, errors)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {name for name, _ in SECURITY_HEADERS}
                message["headers"] = [(name, value) for name, value in message.get("headers", [])
                                      if name.lower() not in names] + SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Changes:
    """Wakes the event streams (asyncio) when the state changes (any thread)."""

    def __init__(self):
        self.loop: asyncio.AbstractEventLoop | None = None
        self.event: asyncio.Event | None = None
        # Set when the server stops: the streams end, so their connections close in time.
        self.closed = False

    def start(self) -> None:
        self.loop, self.event = asyncio.get_running_loop(), asyncio.Event()

    def notify(self) -> None:
        """From any thread: the state changed."""
        if self.loop is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closing meanwhile
                self.loop.call_soon_threadsafe(self._wake)

    def close(self) -> None:
        """From any thread: end every stream."""
        self.closed = True
        self.notify()

    def _wake(self) -> None:
        woken, self.event = self.event, asyncio.Event()
        woken.set()


def create_app(state: DashboardState, changes: Changes, feed=None):
    """The Starlette application over `state`; `feed` (a KafkaFeed, or None) is started and
    stopped with it."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.gzip import GZipMiddleware
    from starlette.responses import FileResponse, JSONResponse, StreamingResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    async def page(request):
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    async def favicon(request):
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    async def snapshot(request):
        return JSONResponse(state.snapshot(), headers={"cache-control": "no-store"})

    async def events(request):
        async def stream():
            sent = None
            while not changes.closed:
                waiting = changes.event  # taken before reading the state: no change is missed
                current = state.snapshot()
                if current["version"] != sent:
                    sent = current["version"]
                    yield f"data: {json.dumps(current, separators=(',', ':'))}\n\n"
                    await asyncio.sleep(MIN_EVENT_INTERVAL_S)
                    continue
                try:
                    await asyncio.wait_for(waiting.wait(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    yield ": keep-alive\n\n"  # a comment line: proxies keep the stream open

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store",
                                          "x-accel-buffering": "no"})

    @contextlib.asynccontextmanager
    async def lifespan(app):
        changes.start()
        state.on_change = changes.notify
        if feed is not None:
            feed.start()
        try:
            yield
        finally:
            if feed is not None:
                feed.stop()

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/favicon.ico", favicon, methods=["GET"]),
        Route("/events", events, methods=["GET"]),
        Route("/api/state", snapshot, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    # GZip leaves text/event-stream alone (Starlette excludes it): events are never buffered.
    return Starlette(routes=routes, lifespan=lifespan,
                     middleware=[Middleware(SecurityHeaders),
                                 Middleware(GZipMiddleware, minimum_size=1000)])


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="dashboard.py",
        description="A live web page of the traffic (topic http-metrics) and its alerts (topic "
                    "alerts): python finale/dashboard.py, then open http://127.0.0.1:8080/.",
        formatter_class=HelpFormatter)
    add = parser.add_argument
    add("--host", default=DEFAULT_HOST,
        help="address to listen on (0.0.0.0: every interface, only behind a firewall or proxy)")
    add("--port", type=int, default=DEFAULT_PORT, help="TCP port to listen on")
    add("--bootstrap-servers", default=DEFAULT_BOOTSTRAP, help=BOOTSTRAP_HELP)
    add("--alerts-topic", default=ALERTS.name, help="topic of the alerts (the analyzer's)")
    add("--metrics-topic", default=METRICS.name,
        help="topic of the window metrics (the analyzer's --metrics-topic)")
    add("--span", default=f"{DEFAULT_SPAN_S // 60} minutes",
        help="how much log time the page shows and keeps (Spark-style interval)")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be in 1..65535, got {args.port}")
    if not args.host.strip():
        parser.error("--host must not be empty")
    if not args.bootstrap_servers.strip():
        parser.error("--bootstrap-servers must not be empty")
    for flag in ("alerts_topic", "metrics_topic"):
        if not getattr(args, flag).strip():
            parser.error(f"--{flag.replace('_', '-')} must not be empty")
    if args.alerts_topic == args.metrics_topic:
        parser.error(f"--alerts-topic and --metrics-topic must differ, both are "
                     f"{args.alerts_topic!r}")
    if not is_interval(args.span) or duration_seconds(args.span) <= 0:
        parser.error(f"--span must be an interval like '15 minutes', got {args.span!r}")
    args.span_s = duration_seconds(args.span)
    return args


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the server starts, so a taken port or a wrong address
    is one line of error, not a server's traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url(host: str, port: int) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from finale.web.feed import KafkaFeed, check_topics

    problem = check_topics(args.bootstrap_servers, [args.alerts_topic, args.metrics_topic])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    try:
        sock = listen(args.host, args.port)
    except OSError as error:
        print(f"error: cannot listen on {args.host}:{args.port}: {error.strerror or error} "
              "(choose another --port)", file=sys.stderr)
        return 1
    import uvicorn

    state, changes = DashboardState(args.span_s), Changes()
    feed = KafkaFeed(state, args.bootstrap_servers, args.alerts_topic, args.metrics_topic,
                     args.span_s)
    app = create_app(state, changes, feed)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            # The event streams never end by themselves: ended first, the server's graceful
            # shutdown finds their connections idle instead of cancelling them.
            changes.close()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False,
                            timeout_graceful_shutdown=1, proxy_headers=False)
    print(f"dashboard: {url(args.host, args.port)} ({args.alerts_topic} and "
          f"{args.metrics_topic} on {args.bootstrap_servers}; Ctrl-C to stop)", flush=True)
    try:
        Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        feed.stop()
        sock.close()
    return 0
