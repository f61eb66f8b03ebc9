"""The replay exchange as its own process, started through its command line as a user would.

The main job and its bootstrap stream from a local replay exchange.  They do not
import it (it is the system's test double, ``infra/replay_exchange``): they run
``python -m infra.replay_exchange ARGS --port N`` and read the URLs it prints
once it serves (``CRYPTOSTREAM_EXCHANGE__HTTP_URL=...`` and ``..._WS_URL=...`` on
stdout), and steer its clock through its HTTP admin endpoint
(``POST /replay/control``), as a user would with ``curl``.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from typing import IO, Any, NamedTuple

from flows.lifecycle import child_group_kwargs, end_group

COMMAND = ("-m", "infra.replay_exchange")
HTTP_KEY, WS_KEY = "CRYPTOSTREAM_EXCHANGE__HTTP_URL", "CRYPTOSTREAM_EXCHANGE__WS_URL"


class ReplayUrls(NamedTuple):
    """Where a running replay exchange serves: REST base and websocket base."""

    http_url: str
    ws_url: str


def speed_arg(speed: float) -> str:
    """Return the ``--speed`` value of a speed in times real time (0 = as fast as clients read)."""
    return "max" if speed == 0 else repr(float(speed))


@contextlib.contextmanager
def replay_process(args: Sequence[str], *, port: int = 0, ready_timeout_s: float = 300.0,
                   env: dict[str, str] | None = None, own_group: bool = False) -> Iterator[ReplayUrls]:
    """Run ``python -m infra.replay_exchange ARGS --port PORT`` while the block runs; yield its URLs.

    Args:
        args: Command-line arguments of the replay exchange (data, speed, seed ...).
        port: Port to serve on; 0 = a free one (the URLs say which).
        ready_timeout_s: How long loading the data and binding may take.
        env: Environment of the process; default this process's.
        own_group: Run it in a process group of its own (:func:`flows.lifecycle.child_group_kwargs`):
            a Ctrl-C at the terminal does not reach it, and the whole group ends with the block.

    Raises:
        SystemExit: If the process ends or stays silent before it serves, with the
            tail of what it wrote to stderr.
    """
    cmd = [sys.executable, *COMMAND, *args, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ) if env is None else env,
                            **(child_group_kwargs() if own_group else {}))
    assert proc.stdout is not None and proc.stderr is not None
    urls: dict[str, str] = {}
    ready = threading.Event()
    errors: collections.deque[str] = collections.deque(maxlen=20)

    def read_stdout(stream: IO[str]) -> None:
        for line in stream:  # keep draining after the URLs, so the process never blocks on a full pipe
            key, sep, value = line.strip().partition("=")
            if sep and key in (HTTP_KEY, WS_KEY):
                urls[key] = value
                if HTTP_KEY in urls and WS_KEY in urls:
                    ready.set()
        ready.set()  # ended before serving: the caller looks at the exit code

    def read_stderr(stream: IO[str]) -> None:
        for line in stream:
            errors.append(line.rstrip())

    readers = [threading.Thread(target=fn, args=(s,), name=f"replay-{n}", daemon=True)
               for fn, s, n in ((read_stdout, proc.stdout, "stdout"), (read_stderr, proc.stderr, "stderr"))]
    for t in readers:
        t.start()
    try:
        if not ready.wait(ready_timeout_s) or HTTP_KEY not in urls or WS_KEY not in urls:
            proc.kill()
            proc.wait()
            readers[1].join(5)
            raise SystemExit(f"replay exchange did not start ({' '.join(cmd[1:])}, exit {proc.returncode}):\n"
                             + "\n".join(errors))
        yield ReplayUrls(urls[HTTP_KEY], urls[WS_KEY])
    finally:
        if own_group:
            end_group(proc)  # SIGTERM to the group: the replay closes its connections and exits
        elif proc.poll() is None:
            proc.terminate()  # SIGTERM: the replay closes its connections and exits
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def control(http_url: str, action: str, **body: Any) -> dict[str, Any]:
    """POST ``{"action": action, **body}`` to the replay's ``/replay/control``; return its status.

    ``control(url, "seek", time=ms)`` moves the replay clock, ``"pause"``,
    ``"resume"`` and ``"reset"`` do what they say.
    """
    req = urllib.request.Request(f"{http_url}/replay/control", method="POST",
                                 data=json.dumps({"action": action, **body}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as reply:
        status: dict[str, Any] = json.loads(reply.read())
    return status
