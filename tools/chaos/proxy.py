"""A TCP proxy on loopback between the chaos run's Kafka clients and the embedded broker, for
the network faults: every connection cut at once, and latency added to everything it forwards.

The broker advertises the proxy's address (deploy/broker.py `advertised_port`), so clients that
reconnect after a cut come back through it. The proxy runs its own event loop in a daemon
thread; the chaos run (synchronous) calls `cut_all` and `set_delay` from its own thread.
"""
from __future__ import annotations

import asyncio
import threading
import time

CHUNK = 256 * 1024


class BrokerProxy:
    def __init__(self, listen_port: int, upstream_port: int, host: str = "127.0.0.1"):
        self.host, self.listen_port, self.upstream_port = host, listen_port, upstream_port
        self.delay = 0.0                 # seconds each chunk is held, in both directions
        self.accepted = 0
        self.cuts = 0
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-proxy", daemon=True)

    # ------------------------------------------------------------------ control (any thread)

    def start(self, timeout: float = 10.0) -> "BrokerProxy":
        self._thread.start()
        if not self._ready.wait(timeout) or self._server is None:
            raise RuntimeError(f"the broker proxy could not listen on "
                               f"{self.host}:{self.listen_port}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def cut_all(self) -> int:
        """Abort every open connection (both sides) at once; returns how many were cut."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(10)

    def set_delay(self, seconds: float) -> None:
        self.delay = seconds

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._accept, self.host, self.listen_port))
        except OSError:
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._cut()

    async def _cut(self) -> int:
        conns = list(self._conns)
        for client, upstream in conns:
            client.transport.abort()
            upstream.transport.abort()
        self._conns.clear()
        self.cuts += 1
        return len(conns)

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter):
        try:
            u_reader, u_writer = await asyncio.open_connection(self.host, self.upstream_port)
        except OSError:
            c_writer.transport.abort()
            return
        self.accepted += 1
        pair = (c_writer, u_writer)
        self._conns.add(pair)
        try:
            await asyncio.gather(self._pipe(c_reader, u_writer), self._pipe(u_reader, c_writer),
                                 return_exceptions=True)
        finally:
            self._conns.discard(pair)
            c_writer.transport.abort()
            u_writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward in order; each chunk leaves `delay` seconds after it arrived (the delay in
        force when it arrived), so throughput is unchanged and only latency grows."""
        queue: asyncio.Queue = asyncio.Queue(maxsize=1024)

        async def read() -> None:
            try:
                while data := await reader.read(CHUNK):
                    await queue.put((time.monotonic() + self.delay, data))
            finally:
                try:
                    queue.put_nowait((0.0, b""))
                except asyncio.QueueFull:       # the writer is gone or stuck: it is aborted
                    pass

        async def write() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            writer.close()

        reading = asyncio.ensure_future(read())
        try:
            await write()
        finally:
            reading.cancel()
