"""Chat backends of the curation pipeline: any OpenAI-compatible endpoint, or a transformers model in process.

A backend answers one chat request at a time, `backend.chat(messages, options) -> ChatResult`, and may be called from
several threads at once (the pipeline bounds how many). Messages use the package's own neutral form, so that every
backend receives the frames `videorft_hf.video` sampled with the run's `VideoSamplingConfig`:

    [{"role": "user", "content": [
        {"type": "video", "frames": uint8 (T, H, W, 3), "metadata": VideoMetadata},   # or
        {"type": "image", "image": PIL.Image},
        {"type": "text", "text": "..."},
    ]}]

- `OpenAIChatBackend` posts to `{base_url}/chat/completions` (vLLM's server, `transformers serve`, TGI, hosted APIs).
  Frames go as one base64 JPEG `image_url` part per sampled frame (`media_mode="frames"`, the default: every
  OpenAI-compatible server that takes images takes these), or as one `video_url` part holding the sampled frames
  re-encoded as an H.264 mp4 at the sampled frame rate (`media_mode="video"`: vLLM takes it; the server then samples
  that clip again by its own rules; `transformers serve` 5.x fails on it for Qwen2.5-VL because it also tries to
  read an audio track from the clip, and hosted APIs of the OpenAI kind refuse it). A message without media is sent
  with plain string content, which text-only APIs require. The API key is read from the environment variable
  named by `api_key_env`, never from a file, and is never logged or written. Transient failures (connection errors,
  timeouts, 408, 409, 425, 429, 500, 502, 503, 504, 529) are retried with exponential backoff and jitter; a
  `Retry-After` header (seconds or an HTTP date) on 429 / 503 is honoured and pauses every thread using the
  backend, so a rate-limited API sees the whole pipeline back off, not just one request.
- `TransformersChatBackend` runs a local checkpoint with `generate`: a Qwen2-VL / Qwen2.5-VL / Qwen3-VL model with
  its processor (frames go in with their `VideoMetadata`, through `videorft_hf.processing`, as in training and
  evaluation), or a text-only causal LM with its tokenizer. Calls are serialised by a lock.

Example:
    ```python
    from videorft_hf.curation import GenerationOptions, OpenAIChatBackend

    backend = OpenAIChatBackend("http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-VL-7B-Instruct")  # vllm serve ...
    result = backend.chat([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], GenerationOptions())
    print(result.text, result.prompt_tokens, result.completion_tokens)
    ```
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..media_encoding import encode_frames_mp4, encode_image_data_url
from ..video import VideoSamplingConfig

logger = logging.getLogger(__name__)

__all__ = [
    "MEDIA_MODES",
    "BackendError",
    "ChatBackend",
    "ChatResult",
    "FatalBackendError",
    "GenerationOptions",
    "OpenAIChatBackend",
    "TransformersChatBackend",
]

MEDIA_MODES = ("frames", "video")
# Statuses worth another try: the request may succeed later as it is.
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
# Statuses that no later request will fix (wrong key, wrong URL or model name): the run stops and says so.
FATAL_STATUSES = frozenset({401, 403, 404})


# --------------------------------------------------------------------------------------------- types
class BackendError(RuntimeError):
    """A chat request failed. `transient` says whether the same request may succeed later (it was retried first).

    The pipeline does not record an item whose request failed: a re-run tries it again.
    """

    def __init__(self, message: str, *, status: int | None = None, transient: bool = False):
        super().__init__(message)
        self.status = status
        self.transient = transient


class FatalBackendError(BackendError):
    """A failure no retry fixes (authentication, unknown endpoint or model): the pipeline stops at once."""


@dataclass(frozen=True)
class GenerationOptions:
    """Decoding settings of one request.

    Args:
        max_tokens: most tokens to generate.
        temperature: sampling temperature (0: greedy).
        top_p: nucleus mass.
        seed: sampling seed (sent to servers that take one; the pipeline varies it between attempts).
        json_mode: ask for a JSON object (`response_format={"type": "json_object"}`; vLLM and OpenAI honour it,
            `transformers serve` ignores it). Not used by the in-process backend.
    """

    max_tokens: int = 2048
    temperature: float = 0.2
    top_p: float = 0.95
    seed: int | None = 0
    json_mode: bool = False


@dataclass
class ChatResult:
    """What one request returned.

    Attributes:
        text: the assistant message's content ("" when the server sent none).
        prompt_tokens, completion_tokens: usage as the backend reports it (0 when it reports none).
        reasoning: a separate reasoning channel (`reasoning_content` / `reasoning` of vLLM's reasoning parsers and
            hosted reasoning APIs), or None.
        finish_reason: "stop", "length", ... when known.
        requests: HTTP requests this result took, retries included.
    """

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning: str | None = None
    finish_reason: str | None = None
    requests: int = 1


@runtime_checkable
class ChatBackend(Protocol):
    """What the pipeline needs from a backend. Implement it to plug in anything (a scripted fake in tests, a
    client of another API).

    `chat` may be called from several threads at once. `info()` returns the JSON-ready settings that decide the
    outputs (model, endpoint; never credentials): a resumed run refuses to continue with a backend whose info differs.
    `sampling_config(config)` returns the config to decode frames with for this backend (a local model needs frame
    sides that are multiples of its patch factor); return `config` unchanged when the server resizes by itself.
    Optionally, `cancel_pending()` makes calls waiting to retry give up (the pipeline calls it when a stage stops).
    """

    def chat(self, messages: Sequence[Mapping[str, Any]], options: GenerationOptions) -> ChatResult: ...

    def info(self) -> dict[str, Any]: ...

    def sampling_config(self, config: VideoSamplingConfig) -> VideoSamplingConfig: ...


# --------------------------------------------------------------------------------------------- media
def _sampled_fps(metadata) -> float:
    """Frames sampled per second of video: len(indices) / total_frames * fps (as the Qwen processors compute it)."""
    total, fps = metadata.total_num_frames, metadata.fps
    if total and fps and metadata.frames_indices:
        return len(metadata.frames_indices) / total * fps
    return 2.0


# --------------------------------------------------------------------------------------------- OpenAI-compatible
def _retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date (RFC 9110); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        import ipaddress

        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OpenAIChatBackend:
    """Chat completions against any OpenAI-compatible endpoint, with retries, backoff and `Retry-After`.

    Args:
        base_url: the API root ending in `/v1`, e.g. `"http://127.0.0.1:8000/v1"`.
        model: the model name the server expects (for `transformers serve` and vLLM, the path or repo id it serves).
        api_key_env: environment variable holding the API key (sent as `Authorization: Bearer ...`); when it is
            unset or empty no key is sent (local servers need none). Keys are never read from files.
        media_mode: "frames" (one base64 JPEG `image_url` part per sampled frame) or "video" (one `video_url` part,
            the sampled frames as an mp4; vLLM only). See the module docstring.
        timeout: seconds to wait for one response.
        max_retries: retries of a transiently failing request (so at most `max_retries + 1` requests).
        backoff_base, backoff_max: the n-th retry waits `min(backoff_max, backoff_base * 2**n)` seconds times a
            random factor in [0.5, 1] (or the server's `Retry-After`, if longer).
        max_retry_after: longest `Retry-After` honoured; a longer one is waited for this long.
        extra_body: fields merged into every request body (e.g. vLLM's `{"top_k": 20}` or `chat_template_kwargs`).
        jpeg_quality: JPEG quality of frames.

    Example:
        >>> backend = OpenAIChatBackend("http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-VL-7B-Instruct")
        >>> backend.info()["model"]
        'Qwen/Qwen2.5-VL-7B-Instruct'
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        media_mode: str = "frames",
        timeout: float = 300.0,
        max_retries: int = 6,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        max_retry_after: float = 600.0,
        extra_body: Mapping[str, Any] | None = None,
        jpeg_quality: int = 90,
    ):
        if media_mode not in MEDIA_MODES:
            raise ValueError(f"media_mode must be one of {MEDIA_MODES}, got {media_mode!r}.")
        parsed = urllib.parse.urlparse(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"base_url must be an http(s) URL such as 'http://127.0.0.1:8000/v1', got {base_url!r}.")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}.")
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.media_mode = media_mode
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.extra_body = dict(extra_body or {})
        self.jpeg_quality = jpeg_quality
        self._pause_lock = threading.Lock()
        self._resume_at = 0.0  # monotonic time before which no request is sent (set by Retry-After)
        self._wakeup = threading.Condition()
        self._epoch = 0  # bumped by cancel_pending: calls started before give up their waits
        self._cancelled = False
        self._stats_lock = threading.Lock()
        self.requests_sent = 0
        self.retries = 0
        key = self._api_key()
        if key and parsed.scheme == "http" and not _is_loopback(parsed.hostname):
            logger.warning(
                "Sending the API key from $%s over plain http to %s; use https for anything but a local server.",
                api_key_env,
                parsed.hostname,
            )

    def _api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        return os.environ.get(self.api_key_env) or None

    def info(self) -> dict[str, Any]:
        """The settings that decide outputs (no credentials)."""
        return {
            "backend": "openai",
            "base_url": self.base_url,
            "model": self.model,
            "media_mode": self.media_mode,
            "extra_body": self.extra_body,
        }

    def sampling_config(self, config: VideoSamplingConfig) -> VideoSamplingConfig:
        """Unchanged: the server's processor resizes frames for its model."""
        return config

    # ---------------------------------------------------------------- request body
    def _content(self, content: Any) -> Any:
        if isinstance(content, str):
            return content
        parts: list[dict[str, Any]] = []
        for part in content:
            kind = part.get("type")
            if kind == "text":
                parts.append({"type": "text", "text": part["text"]})
            elif kind == "image":
                url = encode_image_data_url(part["image"], quality=self.jpeg_quality)
                parts.append({"type": "image_url", "image_url": {"url": url}})
            elif kind == "video" and self.media_mode == "frames":
                for frame in part["frames"]:
                    url = encode_image_data_url(frame, quality=self.jpeg_quality)
                    parts.append({"type": "image_url", "image_url": {"url": url}})
            elif kind == "video":
                data = encode_frames_mp4(part["frames"], _sampled_fps(part["metadata"]))
                url = "data:video/mp4;base64," + base64.b64encode(data).decode("ascii")
                parts.append({"type": "video_url", "video_url": {"url": url}})
            else:
                raise ValueError(f"Unknown content part type {kind!r}; expected 'text', 'image' or 'video'.")
        if all(part["type"] == "text" for part in parts):
            return "".join(part["text"] for part in parts)  # text-only APIs require string content
        return parts

    def build_request(self, messages: Sequence[Mapping[str, Any]], options: GenerationOptions) -> dict[str, Any]:
        """The JSON body sent for `messages` (see the module docstring for how media is encoded).

        Args:
            messages: messages in the package's neutral form.
            options: decoding settings.

        Returns:
            The request body.
        """
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m["role"], "content": self._content(m["content"])} for m in messages],
            "max_tokens": options.max_tokens,
            "temperature": options.temperature,
            "top_p": options.top_p,
        }
        if options.seed is not None:
            body["seed"] = options.seed
        if options.json_mode:
            body["response_format"] = {"type": "json_object"}
        body.update(self.extra_body)
        return body

    # ---------------------------------------------------------------- sending
    def cancel_pending(self) -> None:
        """Makes every call now waiting to retry (backoff or `Retry-After`) give up at once with a transient
        `BackendError`; calls made afterwards are not affected. The pipeline calls this when it stops, so that no
        thread keeps retrying for minutes after a run is over."""
        with self._wakeup:
            self._epoch += 1
            # Sticky until `resume()`: a call a worker had dequeued just before the stop but starts only after it
            # must not retry for minutes either.
            self._cancelled = True
            self._wakeup.notify_all()

    def resume(self) -> None:
        """Re-arms retries after `cancel_pending()`; the pipeline calls it when a stage starts."""
        with self._wakeup:
            self._cancelled = False

    def _sleep(self, seconds: float, epoch: int) -> None:
        with self._wakeup:
            if self._cancelled or self._wakeup.wait_for(
                lambda: self._epoch != epoch or self._cancelled, timeout=seconds
            ):
                raise BackendError(f"{self.url}: cancelled while waiting to retry", transient=True)

    def _wait_for_pause(self, epoch: int) -> None:
        while True:
            with self._pause_lock:
                delay = self._resume_at - time.monotonic()
            if delay <= 0:
                return
            self._sleep(min(delay, 1.0), epoch)

    def _pause_all(self, seconds: float) -> None:
        with self._pause_lock:
            self._resume_at = max(self._resume_at, time.monotonic() + seconds)

    def _backoff(self, retry: int) -> float:
        return min(self.backoff_max, self.backoff_base * 2**retry) * random.uniform(0.5, 1.0)

    def _post(self, data: bytes) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = self._api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            payload = response.read()
        return json.loads(payload)

    def chat(self, messages: Sequence[Mapping[str, Any]], options: GenerationOptions) -> ChatResult:
        """Sends one chat request, retrying transient failures.

        Args:
            messages: messages in the package's neutral form.
            options: decoding settings.

        Returns:
            The `ChatResult`.

        Raises:
            FatalBackendError: 401, 403 or 404: the key, the URL or the model name is wrong.
            BackendError: another client error (not retried; `transient=False`), or a transient failure that
                outlasted `max_retries` (`transient=True`).
        """
        data = json.dumps(self.build_request(messages, options)).encode("utf-8")
        epoch = self._epoch
        attempt = 0
        while True:
            self._wait_for_pause(epoch)
            with self._stats_lock:
                self.requests_sent += 1
            retry_after = None
            try:
                payload = self._post(data)
                return self._result(payload, attempt + 1)
            except urllib.error.HTTPError as error:
                detail = error.read(2000).decode("utf-8", "replace").strip()
                status = error.code
                message = f"{self.url} answered HTTP {status}: {detail[:500]}"
                if status in FATAL_STATUSES:
                    hint = {
                        401: f"check the API key in ${self.api_key_env}",
                        403: f"check the API key in ${self.api_key_env} and its permissions",
                        404: f"check base_url (it should end in /v1) and the model name {self.model!r}",
                    }[status]
                    raise FatalBackendError(f"{message} ({hint})", status=status) from None
                if status not in RETRYABLE_STATUSES:
                    raise BackendError(message, status=status, transient=False) from None
                retry_after = _retry_after_seconds(error.headers.get("Retry-After")) if error.headers else None
                failure = BackendError(message, status=status, transient=True)
            except (TimeoutError, urllib.error.URLError, http.client.HTTPException, ConnectionError) as error:
                failure = BackendError(f"{self.url}: {type(error).__name__}: {error}", transient=True)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                failure = BackendError(f"{self.url} returned a body that is not JSON ({error})", transient=True)
            if attempt >= self.max_retries:
                raise failure
            delay = self._backoff(attempt)
            if retry_after is not None:
                retry_after = min(retry_after, self.max_retry_after)
                self._pause_all(retry_after)  # every thread of this backend waits, not only this one
                delay = max(delay, retry_after)
            logger.info("%s; retry %d/%d in %.1f s", failure, attempt + 1, self.max_retries, delay)
            with self._stats_lock:
                self.retries += 1
            self._sleep(delay, epoch)
            attempt += 1

    def _result(self, payload: Any, requests: int) -> ChatResult:
        try:
            choice = payload["choices"][0]
            message = choice.get("message") or {}
        except (KeyError, IndexError, TypeError):
            raise BackendError(f"{self.url} returned no choices: {str(payload)[:300]}", transient=False) from None
        content = message.get("content")
        if isinstance(content, list):  # some servers return content parts
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        usage = payload.get("usage") or {}
        return ChatResult(
            text=content or "",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            reasoning=reasoning if isinstance(reasoning, str) and reasoning else None,
            finish_reason=choice.get("finish_reason"),
            requests=requests,
        )


# --------------------------------------------------------------------------------------------- transformers
class TransformersChatBackend:
    """A local checkpoint answering chat requests with `generate`, in this process.

    Vision-language models (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) get frames with their `VideoMetadata` through
    `videorft_hf.processing`, exactly as in training and evaluation (M-RoPE positions by Qwen's rule too, through
    `videorft_hf.internals.apply_position_rule`); a text-only causal LM gets the text. Requests
    are served one at a time (a lock), so concurrency above 1 only queues them.

    Args:
        model: the model (in eval mode, on its device).
        processor: its processor (vision-language) or tokenizer (text-only).
        name: recorded in the run's settings (default: the model's `name_or_path`).

    Example:
        >>> from videorft_hf.testing import build_tiny_vlm
        >>> backend = TransformersChatBackend(*build_tiny_vlm("qwen2_5_vl"))
        >>> messages = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
        >>> backend.chat(messages, GenerationOptions(max_tokens=4)).completion_tokens <= 4
        True
    """

    def __init__(self, model, processor, *, name: str | None = None):
        from ..internals import apply_position_rule

        self.model = apply_position_rule(model)  # Qwen's M-RoPE rule, as in training (no-op for other models)
        self.processor = processor
        self.name = name or str(getattr(model, "name_or_path", "") or type(model).__name__)
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.is_vision = hasattr(processor, "image_processor") or hasattr(processor, "video_processor")
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str,
        *,
        dtype: str = "auto",
        device: str | None = None,
        attn_implementation: str | None = None,
    ) -> TransformersChatBackend:
        """Loads a checkpoint: an image-text-to-text model with its processor, else a causal LM with its tokenizer.

        Args:
            model_name_or_path: local folder or Hub id.
            dtype: "auto" (bfloat16 on GPU, float32 on CPU) or a torch dtype name.
            device: default "cuda" when available, else "cpu".
            attn_implementation: forwarded to `from_pretrained`.

        Returns:
            The backend.
        """
        from ..modeling import load_model_and_processor

        model, processor = load_model_and_processor(
            model_name_or_path, dtype=dtype, device=device, attn_implementation=attn_implementation
        )
        return cls(model, processor, name=model_name_or_path)

    def info(self) -> dict[str, Any]:
        """The settings that decide outputs."""
        return {"backend": "transformers", "model": self.name}

    def sampling_config(self, config: VideoSamplingConfig) -> VideoSamplingConfig:
        """`config` with the model's patch factor (frame sides must be multiples of it)."""
        from ..processing import model_sampling_config

        return model_sampling_config(config, self.model.config, self.processor) if self.is_vision else config

    def _inputs(self, messages: Sequence[Mapping[str, Any]]) -> tuple[list[dict], list, list]:
        import numpy as np

        converted, videos, images = [], [], []
        for message in messages:
            content = message["content"]
            if isinstance(content, str):
                converted.append({"role": message["role"], "content": content})
                continue
            parts = []
            for part in content:
                kind = part.get("type")
                if kind == "text":
                    parts.append({"type": "text", "text": part["text"]})
                elif kind in ("video", "image"):
                    if not self.is_vision:
                        raise BackendError(f"{self.name} is a text-only model; it cannot take a {kind}.")
                    parts.append({"type": kind})
                    if kind == "video":  # a copy: cached frames are read-only, which torch warns about
                        videos.append((np.array(part["frames"]), part["metadata"]))
                    else:
                        images.append(part["image"])
                else:
                    raise ValueError(f"Unknown content part type {kind!r}; expected 'text', 'image' or 'video'.")
            if all(part["type"] == "text" for part in parts):
                converted.append({"role": message["role"], "content": "".join(p["text"] for p in parts)})
            else:
                converted.append({"role": message["role"], "content": parts})
        return converted, videos, images

    def chat(self, messages: Sequence[Mapping[str, Any]], options: GenerationOptions) -> ChatResult:
        """Generates one answer (see `ChatBackend`).

        Args:
            messages: messages in the package's neutral form.
            options: decoding settings (`json_mode` is not used).

        Returns:
            The `ChatResult`; token counts are exact (prompt ids, generated ids).
        """
        import torch
        from transformers import GenerationConfig

        from ..processing import check_vision_tokens, encode_prompt, mm_token_type_ids

        converted, videos, images = self._inputs(messages)
        text = self.processor.apply_chat_template(converted, add_generation_prompt=True, tokenize=False)
        ids, vision = encode_prompt(self.processor, text, videos, images)
        config = self.model.config
        image_token_id = getattr(config, "image_token_id", None)
        video_token_id = getattr(config, "video_token_id", None)
        if vision:
            check_vision_tokens(self.processor, ids, vision, config, where=f"A request to {self.name}")
        model_generation = getattr(self.model, "generation_config", None)
        eos = getattr(model_generation, "eos_token_id", None) or self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = eos[0] if isinstance(eos, list) else eos
        sampling = options.temperature > 0
        # Every field explicit: None fields would be filled from the checkpoint's generation_config.json.
        generation_config = GenerationConfig(
            max_new_tokens=options.max_tokens,
            do_sample=sampling,
            temperature=options.temperature if sampling else 1.0,
            top_p=options.top_p if sampling else 1.0,
            top_k=0,
            repetition_penalty=1.0,
            num_beams=1,
            eos_token_id=eos,
            pad_token_id=pad,
            suppress_tokens=[t for t in (image_token_id, video_token_id) if t is not None] or None,
        )
        with self._lock:
            device = next(self.model.parameters()).device
            input_ids = torch.tensor([ids], device=device)
            inputs = {key: value.to(device) for key, value in vision.items()}
            for key in ("pixel_values", "pixel_values_videos"):
                if key in inputs:
                    inputs[key] = inputs[key].to(self.model.dtype)
            if inputs:
                inputs["mm_token_type_ids"] = mm_token_type_ids(input_ids, image_token_id, video_token_id)
            if options.seed is not None:
                torch.manual_seed(options.seed)
            with torch.inference_mode():
                output = self.model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    generation_config=generation_config,
                    **inputs,
                )
        generated = output[0, len(ids) :].tolist()
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        finish = "stop" if generated and generated[-1] in eos_ids else "length"
        return ChatResult(
            text=self.tokenizer.decode(generated, skip_special_tokens=True),
            prompt_tokens=len(ids),
            completion_tokens=len(generated),
            finish_reason=finish,
        )
