"""A dependency-free headless-Chromium harness for tests that check a generated HTML page.

`open_page` opens a local HTML file in Debian's `chromium`, speaks the Chrome DevTools Protocol (CDP) over
`--remote-debugging-pipe` (no websocket library), and returns what a person would notice: console errors, images
that did not load, network requests (recorded, then refused), the value of a JS expression, and a full-page screenshot.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# As root Chromium refuses to start without --no-sandbox; the rest keep a test run quiet and offline.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--hide-scrollbars",
    "--mute-audio",
)
VIEWPORT_WIDTH = 1280  # CSS pixels; the height follows the page so the screenshot holds all of it

_chromium: str | None = None
_chromium_error: str | None = None

_IMAGES_JS = "Array.from(document.images, image => [image.src, image.complete && image.naturalWidth > 0])"
_IMAGES_PENDING_JS = "Array.from(document.images).filter(image => !image.complete).map(image => image.src)"
_HEIGHT_JS = (
    "Math.ceil(Math.max(document.documentElement.scrollHeight, document.body ? document.body.scrollHeight : 0))"
)


@dataclass
class PageResult:
    """What `open_page` saw: messages, per-image `(src, loaded)`, the script's value, the screenshot's path."""

    console_errors: list[str]
    images: list[tuple[str, bool]]
    value: Any
    screenshot: Path | None
    remote_requests: list[str] = field(default_factory=list)  # URLs requested over the network (not file:, data:)


def _find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def ensure_chromium() -> str:
    """The path of a chromium binary, installing Debian's `chromium` package once per test session if missing."""
    global _chromium, _chromium_error
    if _chromium is None and _chromium_error is None:
        _chromium = _find_chromium()
        if _chromium is None:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
            done = subprocess.run(install, env=env, capture_output=True, text=True)
            if done.returncode != 0:  # most often a fresh image without package lists
                subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True)
                done = subprocess.run(install, env=env, capture_output=True, text=True)
            _chromium = _find_chromium()
            if _chromium is None:
                _chromium_error = (
                    f"no chromium or chromium-browser on PATH after `{' '.join(install)}` (exit {done.returncode}):\n"
                    f"{(done.stdout + done.stderr)[-2000:]}"
                )
    if _chromium is None:
        raise RuntimeError(_chromium_error)
    return _chromium


class _DevTools:
    """One CDP connection over a pipe pair: numbered commands, events recorded by a callback, one deadline."""

    def __init__(
        self, write_fd: int, read_fd: int, deadline: float, on_event: Callable[[dict], None], log: Path
    ) -> None:
        self.write_fd, self.read_fd, self.on_event = write_fd, read_fd, on_event
        self.deadline = deadline  # time.monotonic() by which the whole visit must be over
        self.log = log  # Chromium's stdout and stderr, quoted if it dies
        self.buffer = b""
        self.next_id = 0
        self.replies: dict[int, dict] = {}

    def _receive(self, waiting_for: str) -> None:
        """Read one message (a JSON object ended by NUL) and file it as a reply or an event."""
        while b"\0" not in self.buffer:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self.read_fd], [], [], left)[0]:
                raise TimeoutError(f"Chromium: timed out waiting for {waiting_for}")
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                output = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"Chromium exited while we waited for {waiting_for}; its output:\n{output}")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        message = json.loads(raw)
        if "id" in message:
            self.replies[message["id"]] = message
        else:
            self.on_event(message)

    def call(self, method: str, session_id: str | None = None, **params: Any) -> dict:
        """Send a command (to the page's session if given) and return its result; events met on the way are kept."""
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session_id is not None:
            message["sessionId"] = session_id
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        while self.next_id not in self.replies:
            self._receive(f"the reply to {method}")
        reply = self.replies.pop(self.next_id)
        if "error" in reply:
            raise RuntimeError(f"Chromium: {method} failed: {reply['error']}")
        return reply["result"]

    def wait_until(self, done: Callable[[], bool], waiting_for: str) -> None:
        """Read messages until the events seen so far make `done()` true."""
        while not done():
            self._receive(waiting_for)

    def evaluate(self, session_id: str, expression: str) -> Any:
        result = self.call("Runtime.evaluate", session_id, expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"Chromium: {expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")


def _console_text(arguments: list[dict]) -> str:
    return " ".join(str(a.get("value", a.get("description", a.get("type")))) for a in arguments)


def _launch(binary: str, profile: Path) -> tuple[subprocess.Popen, int, int]:
    """Start Chromium reading CDP from its fd 3 and writing to its fd 4; returns the process and our two ends."""
    to_browser_read, to_browser_write = os.pipe()
    from_browser_read, from_browser_write = os.pipe()
    # Move the child's ends above 9 first, so that dup2 onto 3 and 4 cannot overwrite one with the other.
    child_read = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD_CLOEXEC, 10)
    child_write = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(to_browser_read)
    os.close(from_browser_write)

    def arrange_fds() -> None:  # runs in the child; dup2 leaves 3 and 4 inheritable, everything else stays CLOEXEC
        os.dup2(child_read, 3)
        os.dup2(child_write, 4)

    log = (profile / "chromium.log").open("wb")
    arguments = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]
    try:
        process = subprocess.Popen(
            [binary, *arguments],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            close_fds=False,  # pass_fds would close 3 and 4 after arrange_fds; our other fds are CLOEXEC anyway
            preexec_fn=arrange_fds,
            start_new_session=True,  # one process group, so that renderers and helpers die with the browser
        )
    except BaseException:
        os.close(to_browser_write)
        os.close(from_browser_read)
        raise
    finally:
        log.close()
        os.close(child_read)
        os.close(child_write)
    return process, to_browser_write, from_browser_read


def open_page(
    path: Path, *, screenshot: Path | None = None, script: str | None = None, timeout: float = 60
) -> PageResult:
    """Open `path` in headless Chromium, wait for it and its images to load, and report what happened.

    `script` is a JS expression whose JSON-serialisable value is returned; `screenshot` receives a full-page PNG.
    Raises TimeoutError naming the step it was waiting for if the whole visit takes longer than `timeout` seconds.
    """
    binary = ensure_chromium()
    url = Path(path).resolve().as_uri()
    console_errors: list[str] = []
    remote_requests: list[str] = []
    request_urls: dict[str, str] = {}
    # The load event names no document: tie it to the main frame's latest navigation, so that a late load of the
    # initial about:blank cannot pass for ours.
    main_frame_loader: list[str] = [""]
    loaded_loaders: set[str] = set()

    def on_event(message: dict) -> None:
        method, params = message.get("method", ""), message.get("params", {})
        if method == "Page.frameNavigated" and "parentId" not in params["frame"]:
            main_frame_loader[0] = params["frame"]["loaderId"]
        elif method == "Page.loadEventFired":
            loaded_loaders.add(main_frame_loader[0])
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            console_errors.append(f"console.{params['type']}: {_console_text(params.get('args', []))}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            console_errors.append(f"exception: {details.get('exception', {}).get('description', details['text'])}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            console_errors.append(f"log ({entry['source']}): {entry['text']} {entry.get('url', '')}".rstrip())
        elif method == "Network.requestWillBeSent":
            request_url = params["request"]["url"]
            request_urls[params["requestId"]] = request_url
            if not request_url.startswith(("file:", "data:", "blob:", "about:")):  # the last two never leave
                remote_requests.append(request_url)
        elif method == "Network.loadingFailed":
            failed_url = request_urls.get(params["requestId"], "?")
            reason = params["errorText"] or f"blocked ({params.get('blockedReason', 'no reason given')})"
            console_errors.append(f"network: {reason} {failed_url}")

    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    process: subprocess.Popen | None = None
    fds: list[int] = []
    try:
        process, write_fd, read_fd = _launch(binary, profile)
        fds = [write_fd, read_fd]
        devtools = _DevTools(write_fd, read_fd, time.monotonic() + timeout, on_event, profile / "chromium.log")
        target = devtools.call("Target.createTarget", url="about:blank")["targetId"]
        session = devtools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            devtools.call(f"{domain}.enable", session)
        # Remote requests are recorded above, then refused, so that a check never waits on DNS or leaves the machine.
        devtools.call("Network.setBlockedURLs", session, urls=["http://*", "https://*", "ws://*", "wss://*"])
        navigation = devtools.call("Page.navigate", session, url=url)
        if "errorText" in navigation:
            raise RuntimeError(f"Chromium could not open {url}: {navigation['errorText']}")
        loader = navigation["loaderId"]
        devtools.wait_until(lambda: loader in loaded_loaders, f"Page.loadEventFired of {url}")

        # A viewport as tall as the page brings lazy images into view and lets the screenshot hold the whole page;
        # a broken image is `complete` too, so waiting for all to be complete waits for every fetch to end.
        def fit_viewport() -> None:
            size = {"width": VIEWPORT_WIDTH, "height": max(1, devtools.evaluate(session, _HEIGHT_JS))}
            devtools.call("Emulation.setDeviceMetricsOverride", session, **size, deviceScaleFactor=1, mobile=False)

        fit_viewport()
        pending: list[str] = []
        try:
            while pending := devtools.evaluate(session, _IMAGES_PENDING_JS):
                time.sleep(0.05)
        except TimeoutError as error:  # name the images rather than the last Runtime.evaluate
            raise TimeoutError(f"Chromium: timed out waiting for these images of {url} to load: {pending}") from error
        fit_viewport()  # loaded images change the page's height
        images = [(src, loaded) for src, loaded in devtools.evaluate(session, _IMAGES_JS)]
        value = devtools.evaluate(session, script) if script is not None else None
        if screenshot is not None:
            shot = devtools.call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        return PageResult(console_errors, images, value, screenshot, remote_requests)
    finally:
        if process is not None:
            os.killpg(process.pid, signal.SIGKILL)  # its unreaped leader keeps the group alive until wait()
            process.wait()
        for fd in fds:
            os.close(fd)
        shutil.rmtree(profile, ignore_errors=True)
