"""Debian's Chromium, headless at a phone's viewport, driven over the DevTools protocol.

No WebDriver: the DevTools protocol is a WebSocket of JSON commands, and aiohttp (already
a dependency) speaks WebSocket. :class:`Phone` starts its own Chromium with a private
profile, accepts exactly one self-signed certificate (by its public key, as a user who
compared the fingerprint would), types, clicks, reads the page and saves screenshots.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .util import free_port, stop_process

__all__ = ["Phone", "chromium_path", "spki_hash"]

VIEWPORT = (360, 780)


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def spki_hash(cert_pem: bytes) -> str:
    """Base64 SHA-256 of a certificate's public key: Chromium's pin format."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    der = cert.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


class Phone:
    def __init__(self, profile: Path, shots: Path, trust_cert: bytes) -> None:
        exe = chromium_path()
        assert exe is not None, "Debian's chromium is not installed"
        self.shots = shots
        shots.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.proc = subprocess.Popen(
            [exe, "--headless=new", f"--remote-debugging-port={port}",
             "--remote-debugging-address=127.0.0.1", f"--user-data-dir={profile}",
             "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
             f"--ignore-certificate-errors-spki-list={spki_hash(trust_cert)}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.loop = asyncio.new_event_loop()
        self._ids = itertools.count(1)
        ws_url = self._page_target(port)
        self.session = self.loop.run_until_complete(self._open_session())
        self.ws = self.loop.run_until_complete(self.session.ws_connect(ws_url, max_msg_size=0))
        self.cmd("Page.enable")
        self.cmd("Emulation.setDeviceMetricsOverride", width=VIEWPORT[0], height=VIEWPORT[1],
                 deviceScaleFactor=2, mobile=True)

    @staticmethod
    async def _open_session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    def _page_target(self, port: int, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as r:
                    for target in json.loads(r.read()):
                        if target.get("type") == "page":
                            return str(target["webSocketDebuggerUrl"])
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError("chromium did not start its DevTools endpoint")
            time.sleep(0.2)

    def cmd(self, method: str, **params: Any) -> dict[str, Any]:
        async def call() -> dict[str, Any]:
            cid = next(self._ids)
            await self.ws.send_json({"id": cid, "method": method, "params": params})
            while True:
                msg = await self.ws.receive_json(timeout=60)
                if msg.get("id") == cid:
                    if "error" in msg:
                        raise AssertionError(f"{method}: {msg['error']}")
                    result: dict[str, Any] = msg.get("result", {})
                    return result
        return self.loop.run_until_complete(call())

    def eval(self, expression: str) -> Any:
        result = self.cmd("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_loaded(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.eval("document.readyState") != "complete":
            if time.monotonic() > deadline:
                raise AssertionError("page did not load")
            time.sleep(0.1)

    def goto(self, url: str) -> None:
        result = self.cmd("Page.navigate", url=url)
        if result.get("errorText"):
            raise AssertionError(f"{url}: {result['errorText']}")
        time.sleep(0.2)
        self.wait_loaded()

    def url(self) -> str:
        return str(self.eval("location.href"))

    def text(self) -> str:
        return str(self.eval("document.body ? document.body.innerText : ''"))

    def paste(self, selector: str, text: str) -> None:
        """Focus a field and insert text the way a paste does (one input event)."""
        self.eval(f"document.querySelector({json.dumps(selector)}).focus()")
        self.cmd("Input.insertText", text=text)

    def choose_file(self, selector: str, path: Path) -> None:
        """What picking a photo in a file input does (the phone's camera, here a file)."""
        found = self.cmd("Runtime.evaluate",
                         expression=f"document.querySelector({json.dumps(selector)})")
        self.cmd("DOM.setFileInputFiles", files=[str(path)],
                 objectId=found["result"]["objectId"])

    def click_and_wait(self, selector: str) -> None:
        before = self.eval("performance.timeOrigin")
        self.eval(f"document.querySelector({json.dumps(selector)}).click()")
        deadline = time.monotonic() + 60
        while self.eval("performance.timeOrigin") == before:  # a new document
            if time.monotonic() > deadline:
                raise AssertionError(f"clicking {selector} loaded no page")
            time.sleep(0.1)
        self.wait_loaded()

    def screenshot(self, name: str) -> Path:
        """The whole page (not just the viewport) as PNG."""
        metrics = self.cmd("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = self.cmd("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                        clip={"x": 0, "y": 0, "width": VIEWPORT[0],
                              "height": max(VIEWPORT[1], int(size["height"])), "scale": 1})
        path = self.shots / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.ws.close())
            self.loop.run_until_complete(self.session.close())
        finally:
            self.loop.close()
            stop_process(self.proc)
