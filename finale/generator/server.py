"""The generator's TCP output (--host/--port, stage 2's server): every line to every client.

Broadcaster is a single-threaded, non-blocking server; serve() writes a LogStream's lines to it
as a Pacer makes them due. A slow client gets its bytes queued, a stuck one is dropped.
"""
from __future__ import annotations

import selectors
import socket
import time
from collections import deque

from finale.generator.outputs import log
from finale.generator.traffic import LogStream, Pacer

HIGH_WATER = 8 << 20  # bytes queued for one client above which no new batch is made
STALL_TIMEOUT = 10.0  # s: a client with queued bytes that takes nothing for this long is dropped


class Client:
    """One connected client and the bytes queued for it (memoryviews: no copy when partly sent)."""

    def __init__(self, name: str):
        self.name = name
        self.queue: deque[memoryview] = deque()
        self.queued = 0
        self.last_progress = time.monotonic()


class Broadcaster:
    """A single-threaded TCP server: every batch goes to every client connected at that moment.

    Sends never block: what a client cannot take yet is queued. While a client has more than
    HIGH_WATER bytes queued no new batch is made (the lines fall due and go out later in larger
    batches), and a client that takes nothing for STALL_TIMEOUT seconds is dropped, so one stuck
    reader cannot hold the others for long.
    """

    def __init__(self, server: socket.socket):
        self.server = server
        self.selector = selectors.DefaultSelector()
        self.selector.register(server, selectors.EVENT_READ)
        self.clients: dict[socket.socket, Client] = {}

    def poll(self, timeout: float, next_line: int) -> None:
        for key, events in self.selector.select(timeout):
            sock = key.fileobj
            if sock is self.server:
                try:
                    sock, (host, port, *_) = self.server.accept()
                except OSError:
                    continue
                sock.setblocking(False)
                self.clients[sock] = Client(f"{host}:{port}")
                self.selector.register(sock, selectors.EVENT_READ)
                log(f"client {host}:{port} connected at line {next_line}")
                continue
            if events & selectors.EVENT_READ:
                try:
                    if not sock.recv(65536):  # end of stream: the client closed
                        self.drop(sock)
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    self.drop(sock)
                    continue
            if events & selectors.EVENT_WRITE:
                self.flush(sock)

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        for sock, client in list(self.clients.items()):
            client.queue.append(view)
            client.queued += len(view)
            self.flush(sock)

    def flush(self, sock: socket.socket) -> None:
        client = self.clients[sock]
        queue = client.queue
        try:
            while queue:
                sent = sock.send(queue[0])
                client.queued -= sent
                client.last_progress = time.monotonic()
                if sent < len(queue[0]):
                    queue[0] = queue[0][sent:]
                    break
                queue.popleft()
        except BlockingIOError:
            pass
        except OSError:
            self.drop(sock)
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if queue else 0)
        if self.selector.get_key(sock).events != events:
            self.selector.modify(sock, events)

    def backlogged(self) -> bool:
        """True while some client has over HIGH_WATER bytes queued; drops stalled clients."""
        now = time.monotonic()
        for sock, client in list(self.clients.items()):
            if client.queue and now - client.last_progress > STALL_TIMEOUT:
                self.drop(sock, f" (took nothing for {STALL_TIMEOUT:g} s)")
        return any(client.queued > HIGH_WATER for client in self.clients.values())

    def drop(self, sock: socket.socket, why: str = "") -> None:
        client = self.clients.pop(sock)
        self.selector.unregister(sock)
        sock.close()
        log(f"client {client.name} disconnected{why}")

    def drain(self) -> None:
        """Let the clients take what is queued for them (stalled ones are dropped)."""
        while any(client.queue for client in self.clients.values()):
            self.backlogged()
            self.poll(0.1, -1)

    def close(self) -> None:
        for sock in list(self.clients):
            self.drop(sock)
        self.selector.close()
        self.server.close()


def serve(stream: LogStream, pacer: Pacer, broadcaster: Broadcaster) -> None:
    written = 0
    while not pacer.done(written):
        if broadcaster.backlogged():
            broadcaster.poll(0.05, written)
            continue
        broadcaster.poll(pacer.wait(written), written)
        due = pacer.due(written)
        if due > written:
            broadcaster.send(stream.lines(written, due))
            pacer.last_write = time.monotonic()
            written = due
    broadcaster.drain()
