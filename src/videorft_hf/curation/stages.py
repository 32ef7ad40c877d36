"""The work of one unit of each curation stage (`StageWork`): the media as a content part, the model asked until its
output passes the stage's check, and the local filter; and the item (`Item`) the units are made from."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..prompts import (
    CURATION_DESCRIBE_IMAGE_PROMPT,
    CURATION_DESCRIBE_VIDEO_PROMPT,
    CURATION_REASON_PROMPT,
    CURATION_RETRY_PROMPT,
    CURATION_REVISE_PROMPT,
    TYPE_TEMPLATE,
    format_question,
)
from ..rewards.accuracy import accuracy_reward
from ..video import FrameCache, MediaDecodeError, VideoSamplingConfig, load_image, load_video_frames
from .arguments import CLOSED_FORM_TYPES, CurationArguments
from .backends import ChatBackend, ChatResult, GenerationOptions
from .checks import find_description_framing, parse_cot, parse_description
from .units import digest


@dataclass
class Item:
    """One record to curate: its unit key, its index in the input, the validated record and its media file."""

    key: str
    index: int
    record: dict[str, Any]
    media_path: str


class _Usage:
    """Tokens and requests of one unit, summed over its attempts."""

    def __init__(self):
        self.prompt_tokens = self.completion_tokens = self.requests = self.attempts = 0

    def add(self, result: ChatResult) -> None:
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens
        self.requests += result.requests
        self.attempts += 1

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "requests": self.requests,
            "attempts": self.attempts,
        }


class StageWork:
    """The work of one unit of each stage: describe, reason and revise ask the stage's model until its output passes
    the stage's check (`_ask`); filter scores locally. Also the settings each stage's results depend on
    (`stage_configs`). Its methods run in the stage runner's worker threads."""

    def __init__(
        self,
        args: CurationArguments,
        backends: dict[str, ChatBackend],
        semantic_reward: Callable | None,
    ):
        self.args = args
        self.backends = backends
        self._semantic_reward = semantic_reward
        self.base_sampling = args.sampling_config()
        self.cache = FrameCache(args.frame_cache_bytes) if args.frame_cache_bytes else None
        self.store = args.open_frame_store()

    # ---------------------------------------------------------------- settings
    def stage_configs(self) -> dict[str, dict]:
        """The settings each stage's results depend on (`run_config.json`)."""
        args = self.args

        def model_stage(stage: str, *templates: str) -> dict:
            config = {
                "backend": self.backends[stage].info(),
                "prompts": digest(*templates, CURATION_RETRY_PROMPT),
                "max_tokens": getattr(args, f"{stage}_max_tokens"),
                "temperature": getattr(args, f"{stage}_temperature"),
                "top_p": args.top_p,
                "seed": args.seed,
                "attempts": args.attempts,
            }
            if stage != "reason":
                config["sampling"] = self.backends[stage].sampling_config(self.base_sampling).to_dict()
            return config

        describe = model_stage("describe", CURATION_DESCRIBE_VIDEO_PROMPT, CURATION_DESCRIBE_IMAGE_PROMPT)
        describe["json_mode"] = args.json_mode
        semantic = getattr(self._semantic_reward, "encoder", None)
        return {
            "describe": describe,
            "reason": model_stage("reason", CURATION_REASON_PROMPT),
            "revise": model_stage("revise", CURATION_REVISE_PROMPT),
            "filter": {
                "min_accuracy": args.min_accuracy,
                "min_semantic_consistency": args.min_semantic_consistency,
                "semantic_model": getattr(semantic, "model_name_or_path", None) or args.semantic_model,
                "reject_description_framing": args.reject_description_framing,
                "sampling": self.base_sampling.to_dict(),
            },
        }

    # ---------------------------------------------------------------- media
    def media(self, item: Item, config: VideoSamplingConfig) -> dict[str, Any]:
        """The item's media as a content part (frames decoded with `config`, through the frame cache)."""
        if item.record["data_type"] == "video":
            frames, metadata = load_video_frames(
                item.media_path, config, backend=self.args.video_backend, cache=self.cache, store=self.store
            )
            return {"type": "video", "frames": frames, "metadata": metadata}
        return {"type": "image", "image": load_image(item.media_path, config)}

    def _media_or_rejection(self, item: Item, config: VideoSamplingConfig, stage: str):
        try:
            return self.media(item, config), None
        except MediaDecodeError as error:
            if self.args.on_bad_sample == "raise":
                raise
            return None, {"status": "rejected", "reason": f"{stage}.media_error", "detail": str(error)[:500]}

    # ---------------------------------------------------------------- model calls
    def _options(self, stage: str, attempt: int) -> GenerationOptions:
        return GenerationOptions(
            max_tokens=getattr(self.args, f"{stage}_max_tokens"),
            temperature=getattr(self.args, f"{stage}_temperature"),
            top_p=self.args.top_p,
            seed=self.args.seed + attempt,
            json_mode=self.args.json_mode and stage == "describe",
        )

    def _ask(self, stage: str, content: list[dict], check: Callable[[ChatResult], tuple[Any, str | None, str]]):
        """Asks the stage's model until `check` accepts an output or the attempts run out.

        `check(result)` returns `(value, None, _)` for a usable output, or `(None, reason, detail)`. A retry continues
        the conversation with the model's unusable answer and `CURATION_RETRY_PROMPT` saying what was wrong.
        """
        backend, usage = self.backends[stage], _Usage()
        messages: list[dict] = [{"role": "user", "content": content}]
        reason, detail, output = None, "", ""
        for attempt in range(self.args.attempts):
            result = backend.chat(messages, self._options(stage, attempt))
            usage.add(result)
            output = result.text
            value, reason, detail = check(result)
            if reason is None:
                return {"status": "ok", **value, "usage": usage.to_dict()}
            messages = [
                *messages,
                {"role": "assistant", "content": [{"type": "text", "text": result.text}]},
                {"role": "user", "content": [{"type": "text", "text": CURATION_RETRY_PROMPT.format(problem=detail)}]},
            ]
        return {
            "status": "rejected",
            "reason": reason,
            "detail": detail,
            "output": output,
            "usage": usage.to_dict(),
        }

    def describe(self, item: Item) -> dict:
        config = self.backends["describe"].sampling_config(self.base_sampling)
        part, rejection = self._media_or_rejection(item, config, "describe")
        if rejection is not None:
            return rejection
        if part["type"] == "video":
            metadata = part["metadata"]
            times = [index / metadata.fps for index in metadata.frames_indices]
            prompt = CURATION_DESCRIBE_VIDEO_PROMPT.format(
                num_frames=len(times),
                duration=metadata.duration or 0.0,
                timestamps=", ".join(f"{t:.1f}" for t in times),
            )
        else:
            prompt = CURATION_DESCRIBE_IMAGE_PROMPT

        def check(result: ChatResult):
            description, reason, detail = parse_description(result.text)
            return {"description": description, "output": result.text}, reason, detail

        return self._ask("describe", [part, {"type": "text", "text": prompt}], check)

    def _question(self, item: Item) -> tuple[str, str]:
        record = item.record
        question = format_question(record["problem"], record["problem_type"], record["options"])
        return question, TYPE_TEMPLATE[record["problem_type"]]

    @staticmethod
    def _cot_check(stage: str) -> Callable[[ChatResult], tuple[dict, str | None, str | None]]:
        def check(result: ChatResult):
            normalised, problem = parse_cot(result.text, result.reasoning)
            if problem is not None and result.finish_reason == "length":
                problem += " (the output hit max_tokens)"
            return (
                {"output": normalised, "raw_output": result.text},
                None if problem is None else f"{stage}.format",
                problem,
            )

        return check

    def reason(self, item: Item, description: dict) -> dict:
        question, answer_format = self._question(item)
        video = item.record["data_type"] == "video"
        prompt = CURATION_REASON_PROMPT.format(
            media="video" if video else "image",
            as_it_unfolds=" as it unfolds over time" if video else "",
            description=json.dumps(description, ensure_ascii=False, indent=1),
            question=question,
            answer_format=answer_format,
        )
        return self._ask("reason", [{"type": "text", "text": prompt}], self._cot_check("reason"))

    def revise(self, item: Item, draft: str) -> dict:
        config = self.backends["revise"].sampling_config(self.base_sampling)
        part, rejection = self._media_or_rejection(item, config, "revise")
        if rejection is not None:
            return rejection
        question, answer_format = self._question(item)
        prompt = CURATION_REVISE_PROMPT.format(
            media="video" if item.record["data_type"] == "video" else "image",
            question=question,
            draft=draft,
            answer_format=answer_format,
        )
        return self._ask("revise", [part, {"type": "text", "text": prompt}], self._cot_check("revise"))

    def semantic_reward(self) -> Callable:
        if self._semantic_reward is None:
            from ..rewards.semantic import get_semantic_consistency_reward

            self._semantic_reward = get_semantic_consistency_reward(self.args.semantic_model, device=self.args.device)
        return self._semantic_reward

    def filter(self, item: Item, cot: str) -> dict:
        import numpy as np

        args, record = self.args, item.record
        if args.reject_description_framing:
            think = cot[len("<think>") : cot.find("</think>")]
            phrase = find_description_framing(think)
            if phrase is not None:
                return {"status": "rejected", "reason": "filter.description_framing", "detail": repr(phrase)}
        columns = {"solution": [record["solution"]], "problem_type": [record["problem_type"]]}
        accuracy = accuracy_reward([cot], **columns)[0]
        line: dict[str, Any] = {"accuracy": accuracy}
        if record["problem_type"] in CLOSED_FORM_TYPES:
            if accuracy is None or accuracy < args.min_accuracy:
                return {
                    "status": "rejected",
                    "reason": "filter.wrong_answer",
                    "detail": f"accuracy {accuracy} < {args.min_accuracy}",
                    **line,
                }
            return {"status": "ok", **line}
        part, rejection = self._media_or_rejection(item, self.base_sampling, "filter")
        if rejection is not None:
            return {**rejection, **line}
        # Copies: cached frames are read-only, and the encoder's processor warns about non-writable arrays.
        frames = np.array(part["frames"] if part["type"] == "video" else part["image"])
        consistency = self.semantic_reward()([cot], frames=[frames], **columns)[0]
        line["semantic_consistency"] = consistency
        if consistency is None or consistency < args.min_semantic_consistency:
            return {
                "status": "rejected",
                "reason": "filter.low_semantic_consistency",
                "detail": (
                    f"semantic consistency {consistency} < {args.min_semantic_consistency} (accuracy {accuracy})"
                ),
                **line,
            }
        return {"status": "ok", **line}
