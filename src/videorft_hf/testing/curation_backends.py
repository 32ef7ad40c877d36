"""Offline stand-ins for curation backends: a scripted `ChatBackend` and a loopback OpenAI-compatible server.

- `ScriptedChatBackend` answers each stage with a canned, valid output (a schema-valid description, a
  `<think>...</think><answer>...</answer>` draft, the draft back as the revision), or with what a `respond`
  callable returns; deterministic, so that a killed-and-resumed run can be compared with an uninterrupted one.
- `serve_chat_backend(backend)` serves any `ChatBackend` at `http://127.0.0.1:<free port>/v1/chat/completions`
  (OpenAI request and response shapes), with an optional fixed latency and injected failures (429 with
  `Retry-After`, 503, ...). It records every request body and the most requests it had in flight at once.
- `serve_transformers_model(path)` runs `transformers serve` on a local checkpoint (e.g. one written by
  `videorft_hf.testing.save_tiny_vlm`) on 127.0.0.1 and a free port, offline, until the `with` block ends.

Use them in tests and benchmarks of the pipeline's concurrency, retries and resumption; they listen on loopback only.

Example:
    ```python
    from videorft_hf.curation import CurationArguments, run_curation
    from videorft_hf.testing.curation_backends import ScriptedChatBackend, serve_chat_backend

    with serve_chat_backend(ScriptedChatBackend(), latency=0.05) as server:
        run_curation(CurationArguments(input=["qa.jsonl"], output_dir="out", base_url=server.base_url,
                                       model="scripted"))
        print(server.max_in_flight, len(server.requests))
    ```
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..curation.backends import ChatResult, GenerationOptions
from ..prompts import (
    CURATION_DESCRIBE_IMAGE_PROMPT,
    CURATION_DESCRIBE_VIDEO_PROMPT,
    CURATION_REASON_PROMPT,
    CURATION_REVISE_PROMPT,
)
from ..video import VideoSamplingConfig

__all__ = ["ChatServer", "ScriptedChatBackend", "detect_stage", "serve_chat_backend", "serve_transformers_model"]

_STAGE_PREFIXES = (
    ("describe", CURATION_DESCRIBE_VIDEO_PROMPT.split("{", 1)[0]),
    ("describe", CURATION_DESCRIBE_IMAGE_PROMPT.split("{", 1)[0]),
    ("reason", CURATION_REASON_PROMPT.split("{", 1)[0]),
    ("revise", CURATION_REVISE_PROMPT.split("{", 1)[0]),
)
_IMAGE_TOKENS = 16  # what a scripted request counts per image part


def _texts(message: Mapping[str, Any]) -> list[str]:
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    return [part["text"] for part in content or [] if part.get("type") == "text"]


def detect_stage(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """The curation stage a request belongs to, told from its first user message ("describe", "reason", "revise").

    Example:
        >>> detect_stage([{"role": "user", "content": "Below is a detailed structured description of a video ..."}])
        'reason'
    """
    first = next((m for m in messages if m.get("role") == "user"), None)
    text = "".join(_texts(first)) if first else ""
    for stage, prefix in _STAGE_PREFIXES:
        if text.startswith(prefix):
            return stage
    return None


def _section(text: str, name: str) -> str:
    match = re.search(rf"{name}:\n(.*?)\n\n", text, re.DOTALL)
    return match.group(1) if match else ""


class ScriptedChatBackend:
    """A deterministic `ChatBackend` that writes valid curation outputs without a model.

    Args:
        respond: `respond(stage, messages) -> str | None`; a string is returned as the output, None falls back to the
            canned one. `stage` is what `detect_stage` says.
        answers: the answer to give for a question, keyed by a substring of the question (default: "A").
        latency: seconds each request takes.

    Example:
        >>> backend = ScriptedChatBackend(answers={"How many": "2"})
        >>> prompt = "Below is a detailed structured description of a video ...\\n\\nQuestion:\\nHow many cars?\\n\\n"
        >>> result = backend.chat([{"role": "user", "content": prompt}], GenerationOptions())
        >>> result.text.endswith("<answer>2</answer>")
        True
    """

    def __init__(
        self,
        respond: Callable[[str | None, Sequence[Mapping[str, Any]]], str | None] | None = None,
        *,
        answers: Mapping[str, str] | None = None,
        latency: float = 0.0,
    ):
        self.respond = respond
        self.answers = dict(answers or {})
        self.latency = latency
        self.calls: dict[str | None, int] = {}
        self._lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        return {"backend": "scripted", "answers": self.answers}

    def sampling_config(self, config: VideoSamplingConfig) -> VideoSamplingConfig:
        return config

    def canned(self, stage: str | None, messages: Sequence[Mapping[str, Any]]) -> str:
        """The canned output of a stage."""
        prompt = "".join(_texts(next(m for m in messages if m.get("role") == "user")))
        if stage == "describe":
            return json.dumps(
                {
                    "caption": "A red square moves from left to right over a grey floor.",
                    "frames": [
                        {
                            "timestamp": 0.0,
                            "caption": "A red square on the left of a grey floor.",
                            "objects": ["red square", "grey floor"],
                            "actions": ["the square slides"],
                            "scene": "an empty room",
                            "spatial_relations": ["the square is on the floor"],
                            "interactions": [],
                        }
                    ],
                }
            )
        if stage == "revise":
            draft = _section(prompt, "Draft")
            return draft.replace("<think>", "<think>Watching it again, the square is clearly red. ", 1)
        question = _section(prompt, "Question")
        answer = next((a for key, a in self.answers.items() if key in question), "A")
        return (
            "<think>Let me think. I watch the clip: a red square slides across a grey floor. The question asks "
            f"about it, so I focus on the square. Hmm, checking once more, yes.</think>\n<answer>{answer}</answer>"
        )

    def chat(self, messages: Sequence[Mapping[str, Any]], options: GenerationOptions) -> ChatResult:
        stage = detect_stage(messages)
        with self._lock:
            self.calls[stage] = self.calls.get(stage, 0) + 1
        if self.latency:
            time.sleep(self.latency)
        text = self.respond(stage, messages) if self.respond is not None else None
        if text is None:
            text = self.canned(stage, messages)
        prompt_tokens = 0
        for message in messages:
            content = message["content"]
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
            for part in parts:
                prompt_tokens += len(part["text"].split()) if part.get("type") == "text" else _IMAGE_TOKENS
        return ChatResult(text=text, prompt_tokens=prompt_tokens, completion_tokens=len(text.split()))


class ChatServer:
    """A running loopback server (see `serve_chat_backend`).

    Attributes:
        base_url: `http://127.0.0.1:<port>/v1`.
        requests: every request body received, in arrival order.
        max_in_flight: the most requests it was answering at once.
    """

    def __init__(self, httpd: ThreadingHTTPServer):
        self.httpd = httpd
        host, port = httpd.server_address[:2]
        self.base_url = f"http://{host}:{port}/v1"
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0


def _neutral(messages: Sequence[Mapping[str, Any]]) -> list[dict]:
    """OpenAI messages back into the package's form (media parts keep their URL; the scripted backend reads text)."""
    converted = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            parts = [{"type": "text", "text": content}]
        else:
            parts = []
            for part in content or []:
                kind = part.get("type")
                if kind == "text":
                    parts.append({"type": "text", "text": part["text"]})
                elif kind == "image_url":
                    parts.append({"type": "image", "url": part["image_url"]["url"]})
                elif kind == "video_url":
                    parts.append({"type": "video", "url": part["video_url"]["url"]})
        converted.append({"role": message.get("role"), "content": parts})
    return converted


@contextlib.contextmanager
def serve_chat_backend(
    backend,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    latency: float = 0.0,
    faults: Sequence[tuple[int, Mapping[str, str]]] = (),
) -> Iterator[ChatServer]:
    """Serves a `ChatBackend` as an OpenAI-compatible chat-completions endpoint on loopback, for the `with` block.

    Args:
        backend: answers the requests (e.g. `ScriptedChatBackend()`); it gets the messages with text parts and
            media parts that keep their data URL.
        host: a loopback address.
        port: 0 picks a free port.
        latency: seconds added to every request (to measure the pipeline's concurrency).
        faults: `(status, headers)` answers given, in order, to the first requests instead of calling the backend,
            e.g. `[(429, {"Retry-After": "1"}), (503, {})]`.

    Yields:
        The `ChatServer` (its `base_url`, `requests`, `max_in_flight`).

    Raises:
        ValueError: `host` is not a loopback address.
    """
    import ipaddress

    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"serve_chat_backend listens on loopback only, got host {host!r}.")
    pending_faults = list(faults)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _send(self, status: int, payload: Any, headers: Mapping[str, str] = ()) -> None:
            data = json.dumps(payload).encode("utf-8")
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in dict(headers).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client went away (killed, timed out)
                self.close_connection = True

        def do_GET(self):
            if self.path.rstrip("/") in ("/health", "/v1/models"):
                self._send(200, {"status": "ok", "data": [{"id": "scripted", "object": "model"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            with lock:
                server.requests.append(body)
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
                fault = pending_faults.pop(0) if pending_faults else None
            try:
                if latency:
                    time.sleep(latency)
                if fault is not None:
                    status, headers = fault
                    self._send(status, {"error": {"message": "injected fault"}}, headers)
                    return
                options = GenerationOptions(
                    max_tokens=body.get("max_tokens") or 2048,
                    temperature=body.get("temperature", 0.0),
                    top_p=body.get("top_p", 1.0),
                    seed=body.get("seed"),
                )
                result = backend.chat(_neutral(body.get("messages", [])), options)
                self._send(
                    200,
                    {
                        "id": f"chatcmpl-{len(server.requests)}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": result.text},
                                "finish_reason": result.finish_reason or "stop",
                            }
                        ],
                        "usage": {
                            "prompt_tokens": result.prompt_tokens,
                            "completion_tokens": result.completion_tokens,
                            "total_tokens": result.prompt_tokens + result.completion_tokens,
                        },
                    },
                )
            finally:
                with lock:
                    server.in_flight -= 1

    httpd = ThreadingHTTPServer((host, port), Handler)
    httpd.daemon_threads = True
    server = ChatServer(httpd)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="videorft-chat-server", daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serve_transformers_model(
    model_path: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    timeout: float = 120.0,
    extra_args: Sequence[str] = (),
) -> Iterator[str]:
    """Runs `transformers serve <model_path>` on loopback (offline, CPU) for the `with` block.

    Needs `fastapi`, `uvicorn` and `openai` (`pip install 'videorft_hf[serve]'`). The server is a subprocess on a free
    port with `HF_HUB_OFFLINE=1`; readiness is polled on `/health` for at most `timeout` seconds; it is killed when
    the block ends.

    Args:
        model_path: a local checkpoint folder (its path is also the model name requests must use).
        host: a loopback address.
        timeout: seconds to wait for the server to answer `/health`.
        extra_args: more `transformers serve` flags (e.g. `["--continuous-batching"]`).

    Yields:
        The API root, `http://127.0.0.1:<port>/v1`.

    Raises:
        RuntimeError: the server exited or was not ready in time; the message holds the end of its log.
    """
    port = _free_port(host)
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", os.fspath(model_path)]
    command += ["--host", host, "--port", str(port), "--device", "cpu", "--dtype", "float32", *extra_args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    state = "exited" if process.poll() is not None else f"was not ready after {timeout:.0f} s"
                    raise RuntimeError(f"transformers serve {state}:\n{log.read()[-3000:]}")
                time.sleep(0.25)
            yield f"http://{host}:{port}/v1"
        finally:
            process.kill()
            process.wait(timeout=30)
