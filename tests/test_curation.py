"""`videorft curate`: output checks, the OpenAI-compatible client (media parts, retries, Retry-After, credentials),
end-to-end runs with a scripted backend and a tiny in-process model, resumption after SIGKILL, and a real
`transformers serve` with a tiny model on loopback."""

import base64
import io
import json
import runpy
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from videorft_hf.curation import (
    DESCRIPTION_SCHEMA,
    BackendError,
    CurationAborted,
    CurationArguments,
    FatalBackendError,
    GenerationOptions,
    OpenAIChatBackend,
    TransformersChatBackend,
    find_description_framing,
    parse_cot,
    parse_description,
    read_stage_file,
    run_curation,
)
from videorft_hf.data import load_videorft_dataset, validate_record
from videorft_hf.prompts import CURATION_DESCRIBE_IMAGE_PROMPT, CURATION_DESCRIBE_VIDEO_PROMPT
from videorft_hf.rewards import get_semantic_consistency_reward
from videorft_hf.testing import (
    build_tiny_siglip,
    build_tiny_vlm,
    make_record,
    save_tiny_siglip,
    save_tiny_vlm,
    write_test_image,
    write_test_video,
)
from videorft_hf.testing.curation_backends import (
    ScriptedChatBackend,
    detect_stage,
    serve_chat_backend,
    serve_transformers_model,
)
from videorft_hf.video import VideoSamplingConfig, load_video_frames

REPO = Path(__file__).resolve().parents[1]
# 4 frames of 56 x 56 keep every model call on CPU fast.
SMALL = dict(video_min_frames=4, video_max_frames=4, video_min_pixels=56 * 56, video_max_pixels=56 * 56)
SMALL.update(image_min_pixels=56 * 56, image_max_pixels=56 * 56)
def _record(pid, problem, *args, **kwargs):
    return make_record(pid, *args, problem=problem, **kwargs)


ANSWERS = {"How many squares": "1", "Describe the motion": "A red square slides across a grey floor."}




@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Three videos, one image, and records of every outcome: kept (multiple choice, numerical, free-form),
    a wrong answer, an invalid record and a missing video."""
    root = tmp_path_factory.mktemp("curation_media")
    for name in ("a", "b", "c"):
        write_test_video(root / f"{name}.mp4", num_frames=8, fps=4.0, width=56, height=56)
    write_test_image(root / "d.png", 56, 56)
    records = [
        _record(1, "What colour is the square?", "multiple choice", "A", "./a.mp4", options=["A. red", "B. blue"]),
        _record(2, "How many squares are there?", "numerical", "1", "./a.mp4"),
        _record(3, "Describe the motion.", "free-form", "A red square slides across a grey floor.", "./b.mp4"),
        _record(4, "Which colour is shown?", "multiple choice", "B", "./d.png", "image", ["A. red", "B. blue"]),
        {**_record(5, "Broken?", "mcq", "A", "./a.mp4")},
        _record(6, "Is it there?", "multiple choice", "A", "./missing.mp4", options=["A. yes", "B. no"]),
        _record(7, "What colour is the floor?", "multiple choice", "A", "./c.mp4", options=["A. grey", "B. red"]),
        _record(7, "What moves?", "multiple choice", "A", "./c.mp4", options=["A. a square", "B. a ball"]),
    ]
    path = root / "qa.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


@pytest.fixture(scope="module")
def siglip():
    model, processor = build_tiny_siglip()
    return get_semantic_consistency_reward(model=model, processor=processor)


def _args(dataset, output_dir, **overrides):
    values = dict(input=[str(dataset)], output_dir=str(output_dir), progress=False, min_semantic_consistency=0.0)
    values.update(SMALL)
    values.update(overrides)
    return CurationArguments(**values)


def _lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# --------------------------------------------------------------------------------------------- output checks
def test_description_parsing_accepts_fenced_json_and_rejects_with_reasons():
    valid = {
        "caption": "A red square slides.",
        "frames": [
            {
                "timestamp": 0.5,
                "caption": "A square.",
                "objects": ["square"],
                "actions": ["slides"],
                "scene": "a room",
                "spatial_relations": [],
                "interactions": [],
            }
        ],
    }
    text = json.dumps(valid)
    assert parse_description(text) == (valid, None, None)
    assert parse_description(f"```json\n{text}\n```")[0] == valid
    assert parse_description(f"Here it is: {text} Hope it helps.")[0] == valid
    assert parse_description("")[1:] == ("describe.invalid_json", "the output is empty")
    assert parse_description("x,\x18<|object_ref_end|>Y")[1] == "describe.invalid_json"
    broken = {**valid, "frames": [{**valid["frames"][0], "objects": "square"}]}
    assert parse_description(json.dumps(broken))[1:] == (
        "describe.schema",
        "frames/0/objects: 'square' is not of type 'array'",
    )
    assert parse_description(json.dumps({**valid, "frames": []}))[1] == "describe.schema"
    # Every key the schema requires is asked for by both describe prompts.
    keys = DESCRIPTION_SCHEMA["required"] + DESCRIPTION_SCHEMA["properties"]["frames"]["items"]["required"]
    for prompt in (CURATION_DESCRIBE_VIDEO_PROMPT, CURATION_DESCRIBE_IMAGE_PROMPT):
        assert all(f'"{key}"' in prompt for key in keys)


def test_cot_parsing_and_description_framing():
    assert parse_cot("Sure.\n<think> Two cars. </think>\n\n<answer> 2 </answer> Bye") == (
        "<think>Two cars.</think>\n<answer>2</answer>",
        None,
    )
    assert parse_cot("<answer>2</answer>", reasoning="Two cars pass.") == (
        "<think>Two cars pass.</think>\n<answer>2</answer>",
        None,
    )
    assert parse_cot("<think>a</think> so <answer>2</answer>")[1] == "text between </think> and <answer>"
    assert parse_cot("<think>a</think><answer> </answer>")[1] == "the <answer> block is empty"
    assert parse_cot("<think>a <think>b</think><answer>2</answer>")[1].startswith("the <think> block holds")
    assert parse_cot("<think>abc")[1] == "the <think> block is not closed with </think>"
    assert find_description_framing("Based on the provided description, the cup is red.") == (
        "Based on the provided description"
    )
    assert find_description_framing("The caption says it is red.") == "The caption says"
    assert find_description_framing("Hmm, I see the red cup on the left; the text on the sign reads STOP.") is None


# --------------------------------------------------------------------------------------------- the HTTP client
def test_frames_go_as_one_jpeg_image_url_per_sampled_frame_and_text_as_a_string(tmp_path, monkeypatch):
    from PIL import Image

    video = write_test_video(tmp_path / "v.mp4", num_frames=8, fps=4.0, width=56, height=56)
    config = VideoSamplingConfig.from_preset("videorft-train", **{k[6:]: v for k, v in SMALL.items() if "video" in k})
    frames, metadata = load_video_frames(video, config)
    monkeypatch.setenv("CURATE_TEST_KEY", "sk-secret")
    with serve_chat_backend(ScriptedChatBackend()) as server:
        backend = OpenAIChatBackend(server.base_url, "m", api_key_env="CURATE_TEST_KEY")
        messages = [
            {
                "role": "user",
                "content": [
                    {"type": "video", "frames": frames, "metadata": metadata},
                    {"type": "text", "text": "Describe."},
                ],
            }
        ]
        result = backend.chat(messages, GenerationOptions(max_tokens=7, temperature=0.0, seed=3))
        backend.chat([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], GenerationOptions())
        body, text_only = server.requests
    parts = body["messages"][0]["content"]
    assert [part["type"] for part in parts] == ["image_url"] * len(frames) + ["text"]
    decoded = Image.open(io.BytesIO(base64.b64decode(parts[0]["image_url"]["url"].split(",", 1)[1])))
    assert decoded.format == "JPEG" and decoded.size == (frames.shape[2], frames.shape[1])
    assert (body["max_tokens"], body["temperature"], body["seed"], body["model"]) == (7, 0.0, 3, "m")
    assert "response_format" not in body  # transformers serve ignores it; sent only with json_mode
    assert text_only["messages"][0]["content"] == "Hi"  # plain string: text-only APIs require it
    assert result.prompt_tokens == 16 * len(frames) + 1 and result.completion_tokens > 0
    assert "sk-secret" not in json.dumps(backend.info())


def test_video_mode_sends_the_sampled_frames_as_one_mp4_at_the_sampled_rate(tmp_path):
    import av

    video = write_test_video(tmp_path / "v.mp4", num_frames=16, fps=8.0, width=56, height=56)
    frames, metadata = load_video_frames(video, VideoSamplingConfig(min_frames=4, max_frames=4, min_pixels=3136))
    backend = OpenAIChatBackend("http://127.0.0.1:9/v1", "m", media_mode="video")
    body = backend.build_request(
        [{"role": "user", "content": [{"type": "video", "frames": frames, "metadata": metadata}]}], GenerationOptions()
    )
    (part,) = body["messages"][0]["content"]
    data = base64.b64decode(part["video_url"]["url"].removeprefix("data:video/mp4;base64,"))
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        decoded = list(container.decode(stream))
        assert len(decoded) == 4 and float(stream.average_rate) == pytest.approx(4 / 16 * 8.0)


def test_retries_honour_retry_after_and_stop_on_fatal_statuses():
    with serve_chat_backend(ScriptedChatBackend(), faults=[(429, {"Retry-After": "1"}), (503, {})]) as server:
        backend = OpenAIChatBackend(server.base_url, "m", backoff_base=0.01, api_key_env=None)
        start = time.monotonic()
        result = backend.chat([{"role": "user", "content": "Hi"}], GenerationOptions())
        assert time.monotonic() - start >= 1.0  # the server's Retry-After, not the 10 ms backoff
        assert (result.requests, len(server.requests), backend.retries) == (3, 3, 2)
    for status, error_type in ((401, FatalBackendError), (404, FatalBackendError), (400, BackendError)):
        with serve_chat_backend(ScriptedChatBackend(), faults=[(status, {})]) as server:
            backend = OpenAIChatBackend(server.base_url, "m", backoff_base=0.01)
            with pytest.raises(error_type) as caught:
                backend.chat([{"role": "user", "content": "Hi"}], GenerationOptions())
            assert caught.value.status == status and not caught.value.transient and len(server.requests) == 1
    with socket.socket() as probe:  # a port nobody listens on: connection refused, retried, then transient
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = OpenAIChatBackend(f"http://127.0.0.1:{port}/v1", "m", max_retries=2, backoff_base=0.01)
    with pytest.raises(BackendError) as caught:
        backend.chat([{"role": "user", "content": "Hi"}], GenerationOptions())
    assert caught.value.transient and backend.requests_sent == 3


# --------------------------------------------------------------------------------------------- end to end
def test_end_to_end_scripted_stages_give_builder_ready_records_and_reasons(tmp_path, dataset, siglip):
    backend = ScriptedChatBackend(answers=ANSWERS)
    args = _args(dataset, tmp_path / "out")
    summary = run_curation(
        args, describe_backend=backend, reason_backend=backend, revise_backend=backend, semantic_reward=siglip
    )
    kept = _lines(tmp_path / "out" / "cot.jsonl")
    assert [(r["problem_id"], r["problem_type"]) for r in kept] == [
        (1, "multiple choice"),
        (2, "numerical"),
        (3, "free-form"),
        (7, "multiple choice"),
        (7, "multiple choice"),
    ]
    for record in kept:
        assert validate_record(record, require_process=True)["process"].startswith("<think>Watching it again")
    rejected = {(r["problem_id"], r["stage"], r["reason"]) for r in _lines(tmp_path / "out" / "rejected.jsonl")}
    assert rejected == {
        (4, "filter", "filter.wrong_answer"),
        (5, "input", "input.invalid_record"),
        (6, "describe", "describe.media_error"),
    }
    assert summary["items_in"] == 8 and summary["kept"] == 5 and summary["unfinished"] == 0
    assert summary["stages"]["describe"]["in"] == 5 and backend.calls["describe"] == 4  # once per media file
    assert summary["stages"]["reason"]["requests"] == 6 and summary["stages"]["revise"]["prompt_tokens"] > 0
    filtered = read_stage_file(tmp_path / "out" / "stages" / "filter.jsonl")
    assert 0.0 < filtered["3"]["semantic_consistency"] <= 1.0  # the free-form item went through SigLIP

    # The builder of dataset_scripts/ takes the output as it is, and the loader turns it into SFT rows.
    from videorft_hf.dataset_builder import build_dataset

    spec = runpy.run_path(str(REPO / "dataset_scripts" / "videorft_cot_102k" / "build.py"))["SPEC"]
    built = build_dataset(tmp_path / "out" / "cot.jsonl", tmp_path / "built", spec, progress=False)
    assert (built.rows_written, built.rows_rejected) == (5, 0)
    rows = load_videorft_dataset(str(tmp_path / "out" / "cot.jsonl"), media_root=dataset.parent)
    assert rows[0]["completion"][0]["content"][0]["text"].endswith("</think>\n<answer>A</answer>")

    # A re-run of a finished run asks nothing and writes the same files.
    before = (tmp_path / "out" / "cot.jsonl").read_bytes(), (tmp_path / "out" / "rejected.jsonl").read_bytes()
    again = ScriptedChatBackend(answers=ANSWERS)
    run_curation(args, describe_backend=again, reason_backend=again, revise_backend=again, semantic_reward=siglip)
    assert again.calls == {}
    assert before == (
        (tmp_path / "out" / "cot.jsonl").read_bytes(),
        (tmp_path / "out" / "rejected.jsonl").read_bytes(),
    )

    # Other settings for a stage are refused, unless that stage (and what follows) is redone.
    changed = _args(dataset, tmp_path / "out", reason_temperature=0.9)
    with pytest.raises(ValueError, match="--redo_from reason"):
        run_curation(changed, describe_backend=again, reason_backend=again, revise_backend=again)
    changed.redo_from = "reason"
    run_curation(changed, describe_backend=again, reason_backend=again, revise_backend=again, semantic_reward=siglip)
    assert again.calls == {"reason": 6, "revise": 6}


def test_tiny_in_process_model_garbage_is_rejected_with_its_reason(tmp_path, dataset):
    model, processor = build_tiny_vlm("qwen2_5_vl")
    tiny = TransformersChatBackend(model, processor)
    scripted = ScriptedChatBackend(answers=ANSWERS)
    # describe by the tiny model: random weights write no JSON; each media file is asked `attempts` times, each
    # retry telling the model what was wrong, then rejected with the reason.
    args = _args(dataset, tmp_path / "describe", describe_max_tokens=8, attempts=2)
    summary = run_curation(args, describe_backend=tiny, reason_backend=scripted, revise_backend=scripted)
    describe = summary["stages"]["describe"]
    assert describe["rejected"] == {"describe.invalid_json": 4, "describe.media_error": 1}
    assert describe["requests"] == 8 and describe["prompt_tokens"] > 0 and 0 < describe["completion_tokens"] <= 64
    lines = read_stage_file(tmp_path / "describe" / "stages" / "describe.jsonl")
    assert lines["./a.mp4"]["detail"].startswith(("not valid JSON", "the output is empty"))
    assert lines["./a.mp4"]["usage"]["attempts"] == 2
    assert summary["kept"] == 0 and summary["stages"]["reason"]["in"] == 0
    # revise by the tiny model, which sees the frames (video input through the processor): format rejections.
    args = _args(dataset, tmp_path / "revise", revise_max_tokens=8, attempts=1)
    summary = run_curation(args, describe_backend=scripted, reason_backend=scripted, revise_backend=tiny)
    assert summary["stages"]["revise"]["rejected"] == {"revise.format": 6}
    assert summary["rejected"]["revise.format"] == 6 and summary["kept"] == 0


class _FlakyBackend(ScriptedChatBackend):
    """Fails the reason request of one question `failures` times with a transient error."""

    def __init__(self, failures, question="How many squares"):
        super().__init__(answers=ANSWERS)
        self.failures, self.question = failures, question

    def chat(self, messages, options):
        if detect_stage(messages) == "reason" and self.question in str(messages) and self.failures > 0:
            self.failures -= 1
            raise BackendError("503 after retries", status=503, transient=True)
        return super().chat(messages, options)


def test_failed_requests_leave_units_unfinished_and_a_rerun_finishes_them(tmp_path, dataset, siglip):
    flaky = _FlakyBackend(failures=1)
    args = _args(dataset, tmp_path / "out")
    summary = run_curation(
        args, describe_backend=flaky, reason_backend=flaky, revise_backend=flaky, semantic_reward=siglip
    )
    assert summary["unfinished"] == 1 and summary["stages"]["reason"]["unfinished"] == 1
    assert summary["this_run"]["errors"] == ["2: BackendError: 503 after retries"]
    summary = run_curation(
        args, describe_backend=flaky, reason_backend=flaky, revise_backend=flaky, semantic_reward=siglip
    )
    assert summary["unfinished"] == 0 and summary["kept"] == 5
    keys = [line["key"] for line in _lines(tmp_path / "out" / "stages" / "reason.jsonl")]
    assert sorted(keys) == sorted(set(keys))  # every unit written once
    # A backend that fails everything stops the stage instead of burning through the input.
    args = _args(dataset, tmp_path / "down", max_consecutive_failures=2, overwrite_output_dir=True)
    with pytest.raises(CurationAborted, match="2 failed units in a row"):
        run_curation(args, describe_backend=flaky, reason_backend=_FlakyBackend(99, question=""), revise_backend=flaky)
    with serve_chat_backend(ScriptedChatBackend(), faults=[(401, {})] + [(503, {})] * 20) as server:
        args = _args(dataset, tmp_path / "auth", base_url=server.base_url, model="m")
        with pytest.raises(CurationAborted, match="HTTP 401"):
            run_curation(args)
    # The other requests were waiting to retry their 503s: stopping the run cancelled them.
    deadline = time.monotonic() + 30  # generous: a loaded 2-core CI machine schedules threads late
    while any(t.name.startswith("videorft-curate") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("videorft-curate")]


def test_killed_run_resumes_to_the_uninterrupted_output(tmp_path, dataset):
    """SIGKILL a `videorft curate` subprocess midway, tear its last line, resume: same files, no unit twice."""
    siglip_dir = save_tiny_siglip(tmp_path / "siglip")
    flags = {"--semantic_model": str(siglip_dir), "--min_semantic_consistency": "0", "--concurrency": "2"}
    flags.update({f"--{key}": str(value) for key, value in SMALL.items()})
    with serve_chat_backend(ScriptedChatBackend(answers=ANSWERS), latency=0.15) as server:
        common = dict(base_url=server.base_url, model="scripted", semantic_model=str(siglip_dir), concurrency=2)
        reference = run_curation(_args(dataset, tmp_path / "reference", **common))
        requests_reference = len(server.requests)
        assert server.max_in_flight == 2  # concurrency bounds the requests in flight, and reaches it

        killed = tmp_path / "killed"
        command = [sys.executable, "-m", "videorft_hf.scripts.curate", "--input", str(dataset), "--output_dir"]
        command += [str(killed), "--base_url", server.base_url, "--model", "scripted", "--progress", "false"]
        command += [item for pair in flags.items() for item in pair]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        reason_file = killed / "stages" / "reason.jsonl"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            if reason_file.exists() and reason_file.read_text().count("\n") >= 2:
                break
            time.sleep(0.01)
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        process.stderr.close()
        assert not (killed / "summary.json").exists()
        finished = {stage: read_stage_file(killed / "stages" / f"{stage}.jsonl") for stage in ("describe", "reason")}
        assert len(finished["describe"]) == 5 and 2 <= len(finished["reason"]) < 6
        asked = sum(line.get("usage", {}).get("requests", 0) for lines in finished.values() for line in lines.values())
        with open(reason_file, "a") as stream:  # what a kill in the middle of a write leaves
            stream.write('{"key": "3", "input_hash": "abc", "status": "o')
        requests_before = len(server.requests)
        resumed = run_curation(_args(dataset, killed, **common))
        requests_resumed = len(server.requests) - requests_before

    for name in ("cot.jsonl", "rejected.jsonl"):
        assert (killed / name).read_bytes() == (tmp_path / "reference" / name).read_bytes()
    assert {k: v for k, v in resumed.items() if k != "this_run"} == {
        k: v for k, v in reference.items() if k != "this_run"
    }
    for stage in ("describe", "reason", "revise", "filter"):
        keys = [line["key"] for line in _lines(killed / "stages" / f"{stage}.jsonl")]
        assert len(keys) == len(set(keys)), stage  # nothing written twice
    # Nothing finished before the kill was asked again: the resumed run asked only for the rest.
    assert requests_resumed == requests_reference - asked


# --------------------------------------------------------------------------------------------- transformers serve
@pytest.fixture(scope="module")
def transformers_server(tmp_path_factory):
    """`transformers serve` with a tiny Qwen2.5-VL saved to a temporary folder, on 127.0.0.1, offline."""
    from transformers.utils.import_utils import is_serve_available

    if not is_serve_available():
        pytest.skip("transformers serve needs fastapi, uvicorn and openai: pip install 'videorft_hf[serve]'")
    model_dir = str(save_tiny_vlm("qwen2_5_vl", tmp_path_factory.mktemp("served") / "tiny-qwen2.5-vl"))
    with serve_transformers_model(model_dir, timeout=120) as base_url:
        yield base_url, model_dir


def test_transformers_serve_end_to_end(tmp_path, dataset, transformers_server):
    base_url, model = transformers_server
    backend = OpenAIChatBackend(base_url, model, max_retries=1)
    # Every frame reaches the served model as one image: 56 x 56 pixels are 4 merged patches, plus
    # <|vision_start|> and <|vision_end|>.
    frames, metadata = load_video_frames(
        dataset.parent / "a.mp4",
        VideoSamplingConfig(**{"min_frames": 4, "max_frames": 4, "min_pixels": 56 * 56, "max_pixels": 56 * 56}),
    )
    text = {"type": "text", "text": "Describe the video."}
    options = GenerationOptions(max_tokens=4, temperature=0.0)
    plain = backend.chat([{"role": "user", "content": [text]}], options)
    with_frames = backend.chat(
        [{"role": "user", "content": [{"type": "video", "frames": frames, "metadata": metadata}, text]}], options
    )
    assert with_frames.prompt_tokens == plain.prompt_tokens + len(frames) * (4 + 2)
    assert 0 < with_frames.completion_tokens <= 4

    # The whole pipeline against the server: the tiny model's random text is rejected by describe's JSON check.
    args = _args(dataset, tmp_path / "served", base_url=base_url, model=model, attempts=1, describe_max_tokens=8)
    args.concurrency = 2
    summary = run_curation(args)
    assert summary["stages"]["describe"]["rejected"] == {"describe.invalid_json": 4, "describe.media_error": 1}
    assert summary["stages"]["describe"]["prompt_tokens"] > 0 and summary["kept"] == 0
    # Scripted describe and reason, served revise (frames as image_url parts): format rejections with reasons.
    scripted = ScriptedChatBackend(answers=ANSWERS)
    args = _args(dataset, tmp_path / "served_revise", base_url=base_url, model=model, attempts=1, revise_max_tokens=8)
    summary = run_curation(args, describe_backend=scripted, reason_backend=scripted)
    assert summary["stages"]["revise"]["rejected"] == {"revise.format": 6}
    assert summary["stages"]["revise"]["requests"] == 6 and summary["stages"]["revise"]["completion_tokens"] > 0


def test_the_training_path_does_not_import_the_curation_client():
    """vLLM rows and curation requests share the media encoders of `videorft_hf.media_encoding`; training imports
    no part of `videorft_hf.curation`, and curation uses nothing private of `videorft_hf.evaluation`."""
    import ast

    code = (
        "import sys, videorft_hf.vllm_media, videorft_hf.trainer, videorft_hf.scripts.sft, videorft_hf.scripts.grpo; "
        "print(sorted(name for name in sys.modules if name.startswith('videorft_hf.curation')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
    source = Path(__file__).resolve().parents[1] / "src" / "videorft_hf" / "curation" / "backends.py"
    imports = [node for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))) if isinstance(node, ast.ImportFrom)]
    assert not [node.module for node in imports if node.module and node.module.endswith("evaluation")]
