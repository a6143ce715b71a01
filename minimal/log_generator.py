"""Stage 1 log generator: random Apache "combined" lines, broadcast over TCP.

Run:  python minimal/log_generator.py [--host localhost] [--port 9999] [--rate 1]
Every connected client receives one new line per 1/rate second (timestamp = now, UTC), e.g.
  203.0.113.7 - - [28/Nov/2026:09:14:03 +0000] "GET /socks/wool HTTP/1.1" 404 512 "-" "curl/8.5.0"
stdout shows every line sent plus `# client HOST:PORT connected|disconnected`, in true order
(one thread), so it tells exactly which lines each client got. Ctrl-C stops it.
"""
import argparse
import os
import random
import selectors
import signal
import socket
import sys
import time

IPS = ["192.168.1.10", "192.168.1.11", "10.0.0.5", "172.16.4.2", "203.0.113.7", "198.51.100.23"]
REQUESTS = ["GET /", "GET /socks", "GET /socks/wool", "GET /socks/cotton", "GET /cart",
            "POST /cart/add", "GET /checkout", "POST /checkout/payment", "GET /api/products"]
# About one status in four is an error (>= 400): the stage-1 analyzer always has some to show.
STATUSES = [200] * 12 + [304, 302, 404, 404, 403, 500, 503]
REFERERS = ["-", "https://chaussettes.io/", "https://www.google.com/"]
AGENTS = ["Mozilla/5.0 (X11; Linux x86_64)", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)",
          "curl/8.5.0"]


def make_line() -> str:
    # Python never switches LC_TIME away from "C" by itself, so %b is the English month.
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
    return (f'{random.choice(IPS)} - - [{stamp}] "{random.choice(REQUESTS)} HTTP/1.1" '
            f'{random.choice(STATUSES)} {random.randint(200, 5000)} '
            f'"{random.choice(REFERERS)}" "{random.choice(AGENTS)}"')


def serve(server: socket.socket, rate: float) -> None:
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ)
    clients = {}  # socket -> "HOST:PORT"

    def drop(client):
        selector.unregister(client)
        print(f"# client {clients.pop(client)} disconnected", flush=True)
        client.close()

    next_due = time.monotonic()
    while True:
        for key, _ in selector.select(max(0.0, next_due - time.monotonic())):
            client = key.fileobj
            if client is server:
                client, (host, port) = server.accept()
                client.settimeout(5)  # a client that stops reading is dropped, not waited for
                clients[client] = f"{host}:{port}"
                selector.register(client, selectors.EVENT_READ)
                print(f"# client {host}:{port} connected", flush=True)
                continue
            try:  # a readable client sent data (ignored) or closed its end (b"")
                if client.recv(4096):
                    continue
            except OSError:
                pass
            drop(client)
        if time.monotonic() >= next_due:
            line = make_line()
            print(line, flush=True)
            for client in list(clients):
                try:
                    client.sendall(f"{line}\n".encode())
                except OSError:
                    drop(client)
            next_due += 1 / rate


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--host", default="localhost", help="interface to listen on")
    parser.add_argument("--port", type=int, default=9999, help="TCP port to listen on (0..65535)")
    parser.add_argument("--rate", type=float, default=1.0, help="lines per second (> 0)")
    args = parser.parse_args(argv)
    if not 0 < args.rate < float("inf") or not 0 <= args.port <= 65535:
        parser.error(f"need 0 < --rate < inf and 0 <= --port <= 65535, "
                     f"got {args.rate}, {args.port}")
    try:
        server = socket.create_server((args.host, args.port))
    except OSError as error:
        print(f"error: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    print(f"# listening on {args.host}:{args.port}, {args.rate:g} line(s)/s", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops it like Ctrl-C
    try:
        serve(server, args.rate)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # stdout gone (e.g. piped into head): stop quietly, no exit-flush error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
