"""A loopback stand-in for `vllm serve`, speaking the endpoints trl 1.16's `VLLMClient` uses for multimodal
prompts: `/health`, `/v1/models`, `/v1/chat/completions/render`, `/inference/v1/generate` and (a development
endpoint, as with `VLLM_SERVER_DEV_MODE=1`) `/reset_encoder_cache`.

It renders media as vLLM does: a `video_url` frame sequence (`data:video/jpeg;base64,<frame>,...`) is opened frame by
frame with PIL and takes its metadata from the request's `media_io_kwargs`; the model's real Hugging Face processor
expands the chat template; placeholders are reported as offsets into the rendered token ids (one range per video
covering its timestamps for Qwen3-VL, as vLLM's range covers them). Generation checks that every placeholder points
at the right tokens of the prompt it was sent, then answers `n` one-token completions.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image
from transformers.video_utils import VideoMetadata


def frames_digest(frames) -> str:
    return hashlib.sha256(np.ascontiguousarray(frames).tobytes()).hexdigest()


def _runs(ids, token):
    runs, i = [], 0
    while i < len(ids):
        if ids[i] == token:
            j = i
            while j < len(ids) and ids[j] == token:
                j += 1
            runs.append((i, j))
            i = j
        else:
            i += 1
    return runs


class FakeVLLMServer:
    def __init__(self, processor, model_name="tiny-vl", eos_token_id=0, merge_video_runs=False, video_kwargs=None):
        self.processor = processor
        self.model_name = model_name
        self.eos = eos_token_id
        self.merge_video_runs = merge_video_runs  # Qwen3-VL: one range per video over its timestamped runs
        self.video_kwargs = video_kwargs or {}  # extra processor kwargs (e.g. other pixel limits)
        self.renders, self.generations, self.encoder_cache_resets = [], [], 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    # ------------------------------------------------------------------------------------------ endpoints
    def render(self, body):
        content = body["messages"][0]["content"]
        videos, metadata, images, blocks = [], [], [], []
        video_io = (body.get("media_io_kwargs") or {}).get("video") or {}
        for part in content:
            if part["type"] == "video_url":
                header, data = part["video_url"]["url"].split(",", 1)
                assert header == "data:video/jpeg;base64", header
                frames = np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(f))).convert("RGB")) for f in data.split(",")])
                videos.append(frames)
                metadata.append(
                    VideoMetadata(
                        total_num_frames=video_io["total_num_frames"],
                        fps=video_io["fps"],
                        duration=video_io["duration"],
                        frames_indices=video_io["frames_indices"],
                        width=frames.shape[2],
                        height=frames.shape[1],
                    )
                )
                blocks.append({"type": "video"})
            elif part["type"] == "image_url":
                data = part["image_url"]["url"].split(",", 1)[1]
                images.append(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
                blocks.append({"type": "image"})
        text = self.processor.apply_chat_template(
            [{"role": "user", "content": blocks}], add_generation_prompt=True, tokenize=False
        )
        kwargs = {}
        if videos:
            kwargs.update(videos=videos, video_metadata=metadata, do_sample_frames=False, **self.video_kwargs)
        if images:
            kwargs["images"] = images
        ids = self.processor(text=[text], return_tensors="np", **kwargs)["input_ids"][0].tolist()
        tokenizer = self.processor.tokenizer
        placeholders = {}
        if videos:
            runs = _runs(ids, tokenizer.convert_tokens_to_ids(self.processor.video_token))
            if self.merge_video_runs:
                runs = [(runs[0][0], runs[-1][1])]
            placeholders["video"] = [{"offset": a, "length": b - a} for a, b in runs]
        if images:
            runs = _runs(ids, tokenizer.convert_tokens_to_ids(self.processor.image_token))
            placeholders["image"] = [{"offset": a, "length": b - a} for a, b in runs]
        features = {
            "mm_hashes": {"video": [frames_digest(v) for v in videos], "image": [frames_digest(np.asarray(i)) for i in images]},
            "mm_placeholders": placeholders,
        }
        self.renders.append(
            {"body": body, "videos": videos, "metadata": video_io, "images": images, "token_ids": ids, "features": features}
        )
        return {"token_ids": ids, "features": features}

    def generate(self, body):
        ids, features = body["token_ids"], body["features"]
        placed = {}
        if features is not None:  # which render these features came from, and whether they point at its tokens
            render = next(r for r in self.renders if r["features"]["mm_hashes"] == features["mm_hashes"])
            for modality, ranges in features["mm_placeholders"].items():
                originals = render["features"]["mm_placeholders"][modality]
                placed[modality] = [
                    ids[p["offset"] : p["offset"] + p["length"]] == render["token_ids"][q["offset"] : q["offset"] + q["length"]]
                    for p, q in zip(ranges, originals, strict=True)
                ]
        n = body["sampling_params"]["n"]
        self.generations.append({"token_ids": ids, "features": features, "placed": placed, "n": n})
        entry = {"token": f"token_id:{self.eos}", "logprob": -0.5, "top_logprobs": []}
        return {"choices": [{"token_ids": [self.eos], "logprobs": {"content": [entry]}}] * n}

    # ------------------------------------------------------------------------------------------ HTTP
    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/health":
                    self._reply(200, {})
                elif self.path == "/v1/models":
                    self._reply(200, {"data": [{"id": server.model_name}]})
                else:
                    self._reply(404, {"error": self.path})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else {}
                try:
                    if self.path == "/reset_encoder_cache":
                        server.encoder_cache_resets += 1
                        self._reply(200, {})
                    elif self.path == "/v1/chat/completions/render":
                        self._reply(200, server.render(body))
                    elif self.path == "/inference/v1/generate":
                        self._reply(200, server.generate(body))
                    else:
                        self._reply(404, {"error": self.path})
                except Exception as error:  # noqa: BLE001 - reported to the client as a server error
                    self._reply(500, {"error": repr(error)})

        return Handler
