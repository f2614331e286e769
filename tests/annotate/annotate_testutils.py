"""Helpers for the annotate tests: a chat-completions server on 127.0.0.1 and a small registry of VQA/math rows.

The server is real HTTP (http.server): it reads the OpenAI request, decodes the images sent as data URLs, and
answers with what the test's `reply(request) -> Reply` says (a status, a body, a delay). It serves at most
`max_requests` requests and stops itself after `lifetime` seconds.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional

from PIL import Image


@dataclass
class Reply:
    content: Optional[str] = None  # the assistant text of a normal answer
    status: int = 200
    raw: Optional[bytes] = None  # a body sent as it is (malformed responses)
    delay: float = 0.0


@dataclass
class Received:
    """One chat-completions request as the server saw it."""

    body: dict[str, Any]
    headers: dict[str, str]
    text: str  # the text parts joined
    images: list[Image.Image] = field(default_factory=list)  # decoded from the data URLs


def _decode(body: dict[str, Any]) -> tuple[str, list[Image.Image]]:
    texts, images = [], []
    for message in body.get("messages", []):
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        for part in parts:
            if part.get("type") == "text":
                texts.append(part["text"])
            elif part.get("type") == "image_url":
                url = part["image_url"]["url"]
                assert url.startswith("data:image/") and ";base64," in url, url[:40]
                images.append(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    return "".join(texts), images


class FakeChatServer:
    def __init__(self, reply: Callable[[Received], Reply], max_requests: int = 200, lifetime: float = 120.0,
                 models_status: int = 200) -> None:
        self.reply = reply
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.max_requests = max_requests
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

            def do_GET(self) -> None:  # noqa: N802
                if self.path.endswith("/models"):
                    self._send(models_status, json.dumps({"data": [{"id": "fake"}]}).encode())
                else:
                    self._send(404, b"{}")

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                text, images = _decode(body)
                received = Received(body, dict(self.headers), text, images)
                with server.lock:
                    server.received.append(received)
                    if len(server.received) > server.max_requests:
                        self._send(503, b'{"error": "request budget of the test server used up"}')
                        return
                if not self.path.endswith("/chat/completions"):
                    self._send(404, b"{}")
                    return
                out = server.reply(received)
                if out.delay:
                    time.sleep(out.delay)
                if out.raw is not None:
                    self._send(out.status, out.raw)
                elif out.status != 200:
                    self._send(out.status, json.dumps({"error": {"message": "scripted failure"}}).encode())
                else:
                    payload = {"id": "x", "object": "chat.completion", "model": body.get("model"),
                               "choices": [{"index": 0, "finish_reason": "stop",
                                            "message": {"role": "assistant", "content": out.content}}]}
                    self._send(200, json.dumps(payload).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.timer = threading.Timer(lifetime, self.stop)
        self.timer.daemon = True

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "FakeChatServer":
        self.thread.start()
        self.timer.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __exit__(self, *exc: Any) -> None:
        self.timer.cancel()
        self.stop()


def question_of(received: Received) -> str:
    """The `Question: ...` / `Problem:` line of an annotate prompt (identifies the sample)."""
    for marker in ("Question: ", "Problem:\n"):
        if marker in received.text:
            return received.text.split(marker, 1)[1].split("\n", 1)[0].strip()
    return ""


def make_image(path: Path, size: tuple[int, int]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, (255, 255, 255))
    image.paste(Image.new("RGB", (size[0] // 2, size[1]), (200, 30, 30)), (0, 0))
    image.save(path)
    return path.name


def write_registry(root: Path, entries: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]]) -> Path:
    """`entries`: name -> (rows, entry without file_name); rows go to <name>.json."""
    info = {}
    for name, (rows, entry) in entries.items():
        (root / f"{name}.json").write_text(json.dumps(rows))
        info[name] = {"file_name": f"{name}.json", **entry}
    (root / "dataset_info.json").write_text(json.dumps(info))
    return root


SHAREGPT = {
    "formatting": "sharegpt",
    "columns": {"messages": "messages", "images": "images"},
    "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
}


def vqa_rows(root: Path, n: int, size: tuple[int, int] = (333, 217)) -> list[dict[str, Any]]:
    make_image(root / "img" / "odd.png", size)
    return [{"messages": [{"role": "user", "content": f"<image>What is left of object {i}?"},
                          {"role": "assistant", "content": "Answer: red"}],
             "images": ["img/odd.png"], "extra": i} for i in range(n)]


def math_rows(n: int) -> list[dict[str, Any]]:
    return [{"instruction": f"Problem {i}: what is {i} + 40?", "output": f"Add them: \\boxed{{{i + 40}}}",
             "meta": {"i": i}} for i in range(n)]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_config(path: Path, **keys: Any) -> str:
    path.write_text("".join(f"{k}: {json.dumps(v) if isinstance(v, str) else v}\n" for k, v in keys.items()))
    return str(path)
