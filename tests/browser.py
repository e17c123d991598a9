"""Open a page in a real headless chromium and report what happened there.

A small Chrome DevTools Protocol client over the browser's websocket: it opens the page
in a fresh profile, records console messages, uncaught exceptions, browser log errors and
every request the page makes, waits for the load event, then evaluates a script in the
page and returns its value beside the record.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


def chromium() -> str | None:
    """The chromium binary on PATH (tests/install-browser installs Debian's)."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class PageRecord:
    """What a page did while it loaded and rendered."""

    errors: list[str] = field(default_factory=list)  # console errors, exceptions, log errors
    requests: list[str] = field(default_factory=list)  # every URL the page requested
    value: Any = None  # what the probe script returned


class _Session:
    def __init__(self, socket: ClientConnection, record: PageRecord) -> None:
        self.socket = socket
        self.record = record
        self.ids = itertools.count(1)
        self.session_id: str | None = None
        self.loaded = asyncio.Event()

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self.ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if self.session_id and not method.startswith("Target."):
            message["sessionId"] = self.session_id
        await self.socket.send(json.dumps(message))
        while True:
            reply = json.loads(await self.socket.recv())
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))
            self.observe(reply)

    async def pump(self, seconds: float) -> None:
        """Read events for ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                while True:
                    self.observe(json.loads(await self.socket.recv()))
        except TimeoutError:
            pass

    def observe(self, event: dict[str, Any]) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Page.loadEventFired":
            self.loaded.set()
        elif method == "Network.requestWillBeSent":
            self.record.requests.append(params["request"]["url"])
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            self.record.errors.append(f"exception: {text}")
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self.record.errors.append(f"console.{params['type']}: {args}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            self.record.errors.append(f"log: {entry['text']} ({entry.get('url', '')})")


async def _visit(endpoint: str, url: str, probe: str, settle: float) -> PageRecord:
    record = PageRecord()
    async with connect(endpoint, max_size=None) as socket:
        session = _Session(socket, record)
        target = await session.call("Target.createTarget", url="about:blank")
        attached = await session.call(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        session.session_id = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            await session.call(f"{domain}.enable")
        await session.call("Page.navigate", url=url)
        async with asyncio.timeout(60):
            while not session.loaded.is_set():
                session.observe(json.loads(await socket.recv()))
        await session.pump(settle)  # late errors or requests, after the load event
        result = await session.call("Runtime.evaluate", expression=probe, returnByValue=True)
        if "exceptionDetails" in result:
            record.errors.append(f"probe: {result['exceptionDetails']}")
        record.value = result.get("result", {}).get("value")
    return record


def visit(page: Path, probe: str, *, settle: float = 1.0) -> PageRecord:
    """Load ``page`` in headless chromium, then evaluate ``probe`` (a JavaScript
    expression) in it; the record of errors and requests, with the probe's value."""
    binary = chromium()
    assert binary, "chromium is not installed: run tests/install-browser"
    with tempfile.TemporaryDirectory(prefix="retune-browser-") as profile:
        process = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",  # root in CI; the page is the repository's own report
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its helpers in one group, stopped with it
        )
        try:
            endpoint = _endpoint(process)
            return asyncio.run(_visit(endpoint, page.resolve().as_uri(), probe, settle))
        finally:
            _stop(process)


def _stop(process: subprocess.Popen[str]) -> None:
    """Stop the browser and every helper process it started, and wait until none is left:
    a helper that outlives the browser still writes into the profile being removed."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    deadline = time.monotonic() + 10
    while _running_in_group(process.pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"chromium's helpers (process group {process.pid}) outlived it")
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def _running_in_group(group: int) -> bool:
    """Whether a process of ``group`` is still alive (a zombie writes nothing)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid pgrp ...; comm may hold spaces, so split after it
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue  # gone while read
        if int(pgrp) == group and state != "Z":
            return True
    return False


def _endpoint(process: subprocess.Popen[str]) -> str:
    """The browser's websocket address, from the line chromium prints when it listens."""
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        match = _LISTENING.search(line)
        if match:
            # keep reading, so a chatty browser never blocks on a full pipe
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return match.group(1)
        seen.append(line)
    raise RuntimeError(f"chromium exited before listening: {''.join(seen)[-2000:]}")
