"""Counts the Prefect API traffic of every process of a benchmark (bench_runners.py): each HTTP request
(httpx) appends 'h' and each websocket message (Prefect's events: task-run states) appends 'e' to
$SYNTHLOOM_BENCH_COUNT_DIR/<pid>. One byte per call, appended at once, so a worker killed or torn down
without atexit still leaves its count. Loaded only through PYTHONPATH, by the benchmark."""

import os

_DIR = os.environ.get("SYNTHLOOM_BENCH_COUNT_DIR")


def _mark(kind: str) -> None:
    with open(os.path.join(_DIR, str(os.getpid())), "a") as handle:
        handle.write(kind)


if _DIR:
    import httpx

    _send, _asend = httpx.Client.send, httpx.AsyncClient.send

    def send(self, *args, **kwargs):
        _mark("h")
        return _send(self, *args, **kwargs)

    async def asend(self, *args, **kwargs):
        _mark("h")
        return await _asend(self, *args, **kwargs)

    httpx.Client.send, httpx.AsyncClient.send = send, asend
    try:
        from websockets.asyncio.client import ClientConnection

        _ws_send = ClientConnection.send

        async def ws_send(self, *args, **kwargs):
            _mark("e")
            return await _ws_send(self, *args, **kwargs)

        ClientConnection.send = ws_send
    except ImportError:
        pass
