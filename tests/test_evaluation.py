"""`videorft eval`: benchmarks, resumable results files, decode errors, tables, model-index, vLLM requests, and a tiny
model evaluated end to end (interrupted and resumed gives the uninterrupted table)."""

import importlib.util
import json
import os

import numpy as np
import pytest

from videorft_hf.evaluation import (
    EvalArguments,
    EvalSample,
    TransformersGenerator,
    VLLMGenerator,
    aggregate_results,
    build_vllm_request,
    format_results_markdown,
    parse_benchmark_spec,
    read_results,
    results_to_model_index,
    run_evaluation,
)
from videorft_hf.modeling import load_model_and_processor
from videorft_hf.processing import RowMedia, load_row_media
from videorft_hf.prompts import build_prompt_text
from videorft_hf.testing import (
    build_tiny_processor,
    build_tiny_vlm,
    build_tiny_vlm_config,
    save_tiny_vlm,
    write_test_image,
    write_test_video,
    write_truncated_video,
)
from videorft_hf.testing import (
    make_record as _record,
)
from videorft_hf.video import VideoSamplingConfig

# Small frames keep the CPU runs fast: 4 frames of 56x56 (the eval preset's rules, smaller numbers).
SMALL = dict(video_min_frames=4, video_max_frames=4, video_min_pixels=56 * 56, video_max_pixels=56 * 56)
SMALL.update(image_min_pixels=56 * 56, image_max_pixels=56 * 56)




@pytest.fixture(scope="module")
def media_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    write_test_video(root / "clips" / "a.mp4", num_frames=8, fps=4.0, width=64, height=48)
    write_test_video(root / "clips" / "b.mp4", num_frames=12, fps=6.0, width=56, height=56)
    write_test_image(root / "images" / "c.png", width=60, height=60)
    write_truncated_video(root / "clips" / "a.mp4", root / "clips" / "broken.mp4", keep_fraction=0.3)
    return root


@pytest.fixture(scope="module")
def benchmark_files(media_root, tmp_path_factory):
    folder = tmp_path_factory.mktemp("benchmarks")
    options = ["A. red", "B. blue", "C. green", "D. white"]
    vsi = [
        _record(1, "multiple choice", "A", "./clips/a.mp4", options=options, problem="Which colour?"),
        _record(2, "regression", "4", "./clips/b.mp4", problem="How far is the chair (m)?"),
        _record(3, "multiple choice", "B", "./clips/b.mp4", options=options),
        _record(4, "regression", "10", "./clips/a.mp4"),
        _record(5, "multiple choice", "C", "./clips/broken.mp4", options=options),  # fails to decode
    ]
    mixed = [
        _record(10, "numerical", "3", "./clips/a.mp4"),
        _record(11, "OCR", "STOP HERE", "./images/c.png", data_type="image"),
        _record(12, "free-form", "a ball rolls", "./clips/b.mp4"),
        _record(13, "multiple choice", "D", "./clips/missing.mp4", options=options),  # file not found
    ]
    (folder / "eval_vsibench.json").write_text(json.dumps(vsi))  # a JSON array, as Video-R1-eval
    (folder / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mixed))
    return {"vsi": folder / "eval_vsibench.json", "mixed": folder / "mixed.jsonl"}


class ScriptedGenerator:
    """A stand-in backend with the real tiny processor: answers from a script keyed by problem_id, and can crash."""

    def __init__(self, answers, crash_after_batches=None, family="qwen2_5_vl"):
        self.processor = build_tiny_processor(family)
        self.model_config = build_tiny_vlm_config(family)
        self.answers = answers
        self.crash_after_batches = crash_after_batches
        self.batches = 0
        self.seen = []

    def prepare(self, sample):
        sample.inputs = sample.text

    def generate(self, samples):
        if self.crash_after_batches is not None and self.batches >= self.crash_after_batches:
            raise KeyboardInterrupt("simulated interruption")
        self.batches += 1
        self.seen.extend(samples)
        return [self.answers[s.row["problem_id"]] for s in samples]


ANSWERS = {
    1: "<think>It is red.</think><answer>A</answer>",
    2: "<think>About 5 m.</think><answer>5</answer>",  # MRA 0.5
    3: "B",  # no answer tag: taken whole
    4: "<answer>10.4</answer>",  # relative error 0.04: MRA 1.0
    5: "<answer>C</answer>",
    10: "<answer>3</answer>",
    11: "<answer>STOP THERE</answer>",  # WER 1/2
    12: "<answer>a ball rolls</answer>",
    13: "<answer>D</answer>",
}


def _args(tmp_path, benchmark_files, media_root, name="out", **overrides):
    values = dict(
        benchmarks=[str(benchmark_files["vsi"]), f"Mixed={benchmark_files['mixed']}"],
        media_root=None if media_root is None else str(media_root),
        output_dir=str(tmp_path / name),
        batch_size=2,
        cache_dir=str(tmp_path / "cache"),
        progress=False,
        decode_workers=1,
        **SMALL,
    )
    values.update(overrides)
    return EvalArguments(**values)


# --------------------------------------------------------------------------------------------- benchmarks and files
def test_benchmark_specs(tmp_path):
    assert parse_benchmark_spec("/data/eval_vsibench.json").name == "VSI-Bench"
    assert parse_benchmark_spec("/data/Video-R1-eval/eval_videomme.json").name == "VideoMME"
    assert parse_benchmark_spec("mvbench.jsonl").name == "MVBench"
    assert parse_benchmark_spec("/data/my_bench.jsonl").name == "my_bench"
    assert parse_benchmark_spec("Mine=/data/x.json") == parse_benchmark_spec("Mine=/data/x.json")
    spec = parse_benchmark_spec("TempCompass=Video-R1/Video-R1-eval:eval_tempcompass.json")
    assert (spec.name, spec.source, spec.data_file) == (
        "TempCompass",
        "Video-R1/Video-R1-eval",
        "eval_tempcompass.json",
    )
    odd = tmp_path / "a=b.json"  # an existing path containing "=" is a path
    odd.write_text("[]")
    assert parse_benchmark_spec(str(odd)).source == str(odd)
    with pytest.raises(ValueError, match="names no file"):
        parse_benchmark_spec("MVBench=")


def test_arguments_validate_early():
    with pytest.raises(ValueError, match="backend"):
        EvalArguments(benchmarks=["x.json"], backend="tgi")
    with pytest.raises(ValueError, match="temperature"):
        EvalArguments(benchmarks=["x.json"], temperature=-1)
    with pytest.raises(ValueError, match="sampling preset"):
        EvalArguments(benchmarks=["x.json"], video_sampling_preset="nope")
    args = EvalArguments(benchmarks=["x.json"])
    assert (args.temperature, args.top_p, args.max_new_tokens) == (0.1, 0.001, 1024)
    assert args.sampling_config() == VideoSamplingConfig.from_preset("videorft-eval")


def test_read_results_drops_a_torn_last_line_and_keeps_the_last_record(tmp_path):
    path = tmp_path / "r.jsonl"
    lines = [json.dumps({"key": "1", "score": 0.0}), json.dumps({"key": "2", "score": 1.0}), json.dumps({"key": "1"})]
    path.write_text("\n".join(lines) + "\n" + '{"key": "3", "sco')  # a crash in the middle of a write
    records = read_results(path)
    assert set(records) == {"1", "2"} and records["1"] == {"key": "1"}
    assert path.read_text().endswith(lines[-1] + "\n")  # the torn tail is cut, appends start on a fresh line
    path.write_text(lines[0] + "\nnot json\n" + lines[1] + "\n")
    with pytest.raises(ValueError, match="line 2"):
        read_results(path)
    assert read_results(tmp_path / "missing.jsonl") == {}


# --------------------------------------------------------------------------------------------- runs with a script
def test_run_scores_records_errors_and_writes_tables(tmp_path, benchmark_files, media_root):
    generator = ScriptedGenerator(ANSWERS)
    aggregate = run_evaluation(_args(tmp_path, benchmark_files, media_root), generator=generator)

    vsi = aggregate["benchmarks"]["VSI-Bench"]
    assert (vsi["num_samples"], vsi["num_scored"], vsi["num_errors"]) == (5, 4, 1)
    assert vsi["multiple_choice_accuracy"] == pytest.approx(100.0)  # samples 1 and 3 (5 failed to decode)
    assert vsi["mean_relative_accuracy"] == pytest.approx(75.0)  # (0.5 + 1.0) / 2
    assert vsi["combined"] == vsi["score"] == pytest.approx(100 * (1 + 0.5 + 1 + 1) / 4)
    mixed = aggregate["benchmarks"]["Mixed"]
    assert (mixed["num_scored"], mixed["num_errors"]) == (3, 1)
    assert mixed["per_type"]["OCR"]["score"] == pytest.approx(50.0)
    assert mixed["score"] == pytest.approx(100 * (1 + 0.5 + 1) / 3)
    assert "combined" not in mixed
    assert aggregate["num_errors"] == 2

    out = tmp_path / "out"
    samples = json.loads((out / "VSI-Bench.json").read_text())["samples"]
    assert [s["problem_id"] for s in samples] == [1, 2, 3, 4, 5]
    assert samples[2]["prediction"] == "B" and samples[2]["score"] == 1.0
    assert samples[1]["output"] == ANSWERS[2] and samples[1]["ground_truth"] == "4"
    assert samples[4]["score"] is None and "broken.mp4" in samples[4]["error"]
    missing = json.loads((out / "Mixed.json").read_text())["samples"][3]
    assert missing["error"].startswith("VideoNotFoundError")
    assert json.loads((out / "results.json").read_text())["benchmarks"] == aggregate["benchmarks"]
    markdown = (out / "results.md").read_text()
    assert "| VSI-Bench | 87.5 | 5 | 4 | 1 |" in markdown
    assert "| VSI-Bench | 100.0 | 75.0 | 87.5 |" in markdown  # multiple choice, MRA, combined
    assert "| VideoRFT-7B | 36.8 |" in markdown

    # What the model saw: the package's prompt (the training prompt) and frames sampled by the run's config.
    first = next(s for s in generator.seen if s.row["problem_id"] == 1)
    expected = build_prompt_text("Which colour?", "multiple choice", ["A. red", "B. blue", "C. green", "D. white"])
    assert expected in first.text
    # Samples give up their frames once scored; decode the same row again to check the sampling.
    frames, metadata = load_row_media(
        first.row, _args(tmp_path, benchmark_files, media_root).sampling_config()
    ).videos[0]
    assert frames.shape == (4, 56, 56, 3) and metadata.frames_indices == [0, 2, 5, 7]


def test_interrupted_run_resumes_to_the_same_table(tmp_path, benchmark_files, media_root):
    reference = run_evaluation(_args(tmp_path, benchmark_files, media_root, "full"), ScriptedGenerator(ANSWERS))

    args = _args(tmp_path, benchmark_files, media_root, "resumed")
    with pytest.raises(KeyboardInterrupt):
        run_evaluation(args, generator=ScriptedGenerator(ANSWERS, crash_after_batches=1))
    predictions = tmp_path / "resumed" / "predictions" / "VSI-Bench.jsonl"
    assert len(predictions.read_text().splitlines()) == 2  # the first batch was written before the crash
    with open(predictions, "a") as stream:  # and a crash in the middle of writing the next one
        stream.write('{"benchmark": "VSI-Bench", "key": "3", "out')

    generator = ScriptedGenerator(ANSWERS)
    resumed = run_evaluation(args, generator=generator)
    assert resumed["benchmarks"] == reference["benchmarks"]
    assert sorted(s.row["problem_id"] for s in generator.seen) == [3, 4, 10, 11, 12]  # only what was not done
    lines = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [r["key"] for r in lines] == ["1", "2", "3", "4", "5"]  # no duplicate, no torn line
    for name in ("VSI-Bench.json", "Mixed.json"):
        assert json.loads((tmp_path / "resumed" / name).read_text()) == json.loads(
            (tmp_path / "full" / name).read_text()
        )

    # A third run has nothing left to do.
    idle = ScriptedGenerator(ANSWERS)
    assert run_evaluation(args, generator=idle)["benchmarks"] == reference["benchmarks"]
    assert idle.seen == []


def test_max_samples_then_full_run_and_settings_guard(tmp_path, benchmark_files, media_root):
    partial = run_evaluation(
        _args(tmp_path, benchmark_files, media_root, max_samples=2), generator=ScriptedGenerator(ANSWERS)
    )
    assert partial["benchmarks"]["VSI-Bench"]["num_samples"] == 2
    generator = ScriptedGenerator(ANSWERS)
    full = run_evaluation(_args(tmp_path, benchmark_files, media_root), generator=generator)
    assert full["benchmarks"]["VSI-Bench"]["num_samples"] == 5
    assert 1 not in {s.row["problem_id"] for s in generator.seen}

    with pytest.raises(ValueError, match="max_new_tokens: 1024 -> 16"):
        run_evaluation(_args(tmp_path, benchmark_files, media_root, max_new_tokens=16), ScriptedGenerator(ANSWERS))
    fresh = ScriptedGenerator(ANSWERS)
    run_evaluation(
        _args(tmp_path, benchmark_files, media_root, max_new_tokens=16, overwrite_output_dir=True), generator=fresh
    )
    assert len(fresh.seen) == 7  # everything redone


def test_retry_errors_and_raise_on_bad_sample(tmp_path, benchmark_files, media_root):
    run_evaluation(_args(tmp_path, benchmark_files, media_root), generator=ScriptedGenerator(ANSWERS))
    (media_root / "clips" / "missing.mp4").write_bytes((media_root / "clips" / "b.mp4").read_bytes())
    try:
        generator = ScriptedGenerator(ANSWERS)
        aggregate = run_evaluation(_args(tmp_path, benchmark_files, media_root, retry_errors=True), generator)
        assert sorted(s.row["problem_id"] for s in generator.seen) == [13]  # 5 failed again, without generating
        assert aggregate["benchmarks"]["Mixed"]["num_errors"] == 0
        assert aggregate["benchmarks"]["VSI-Bench"]["num_errors"] == 1
    finally:
        os.remove(media_root / "clips" / "missing.mp4")
    from videorft_hf.video import VideoDecodeError

    with pytest.raises(VideoDecodeError, match="broken.mp4"):
        run_evaluation(
            _args(tmp_path, benchmark_files, media_root, "strict", on_bad_sample="raise"), ScriptedGenerator(ANSWERS)
        )


# --------------------------------------------------------------------------------------------- tables and the Hub
def test_model_index_round_trips_through_huggingface_hub():
    from huggingface_hub.repocard_data import model_index_to_eval_results

    records = {
        "VSI-Bench": [
            {"problem_type": "multiple choice", "score": 1.0, "error": None},
            {"problem_type": "regression", "score": 0.5, "error": None},
            {"problem_type": "multiple choice", "score": None, "error": "VideoDecodeError: x"},
        ],
        "MVBench": [{"problem_type": "multiple choice", "score": 1.0, "error": None}],
        "Empty": [{"problem_type": "multiple choice", "score": None, "error": "VideoNotFoundError: y"}],
    }
    aggregate = aggregate_results(records, model_name_or_path="ckpt")
    model_index = results_to_model_index(aggregate, "my-videorft")
    name, results = model_index_to_eval_results(model_index)
    assert name == "my-videorft"
    by_metric = {(r.dataset_name, r.metric_name): r for r in results}
    assert by_metric[("MVBench", "accuracy")].metric_value == 100.0
    assert by_metric[("MVBench", "accuracy")].dataset_type == "OpenGVLab/MVBench"
    assert by_metric[("VSI-Bench", "combined (accuracy and MRA)")].metric_value == 75.0
    assert by_metric[("VSI-Bench", "MRA")].metric_type == "mean_relative_accuracy"
    assert all(r.task_type == "video-text-to-text" for r in results)
    assert "Empty" not in {r.dataset_name for r in results}  # no score, no entry
    assert "| Empty | - | 1 | 0 | 1 |" in format_results_markdown(aggregate)


# --------------------------------------------------------------------------------------------- vLLM requests
def _sample(media_root, row, config):
    sample = EvalSample("b", "1", 0, row, text="<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Q")
    sample.media = load_row_media(row, config)
    return sample


def test_vllm_requests_carry_sampled_frames_and_metadata(media_root):
    config = VideoSamplingConfig.from_preset("videorft-eval", min_frames=4, max_frames=4)
    sample = _sample(media_root, {"video": str(media_root / "clips" / "b.mp4")}, config)
    request = build_vllm_request(sample, "qwen2_5_vl")
    assert request["prompt"] == sample.text
    ((frames, metadata),) = request["multi_modal_data"]["video"]
    assert frames is sample.media.videos[0][0] and frames.dtype == np.uint8 and frames.shape[0] == 4
    assert metadata["fps"] == 6.0 and metadata["total_num_frames"] == 12
    assert metadata["frames_indices"] == [0, 4, 7, 11] and metadata["do_sample_frames"] is False
    json.dumps(metadata)  # plain values only
    assert request["mm_processor_kwargs"] == {"do_sample_frames": False, "fps": pytest.approx(2.0)}
    assert "fps" not in build_vllm_request(sample, "qwen3_vl")["mm_processor_kwargs"]  # Qwen3-VL reads the metadata

    image = _sample(media_root, {"image": str(media_root / "images" / "c.png")}, config)
    request = build_vllm_request(image, "qwen2_5_vl")
    assert request["multi_modal_data"] == {"image": image.media.images[0]} and "mm_processor_kwargs" not in request
    text_only = EvalSample("b", "2", 1, {}, text="hello")
    text_only.media = RowMedia()
    assert build_vllm_request(text_only) == {"prompt": "hello"}


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_vllm_backend_without_vllm_says_how_to_install(tmp_path, benchmark_files, media_root):
    with pytest.raises(ImportError, match=r"pip install 'videorft_hf\[vllm\]'"):
        VLLMGenerator("model", build_tiny_processor("qwen2_5_vl"), build_tiny_vlm_config("qwen2_5_vl"))
    model = save_tiny_vlm("qwen2_5_vl", tmp_path / "tiny")
    args = _args(tmp_path, benchmark_files, media_root, backend="vllm", model_name_or_path=str(model))
    with pytest.raises(ImportError, match="vLLM backend needs vLLM"):
        run_evaluation(args)


# --------------------------------------------------------------------------------------------- tiny models, end to end
@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return save_tiny_vlm("qwen2_5_vl", tmp_path_factory.mktemp("tiny") / "qwen2_5_vl")


@pytest.mark.parametrize("decoding", [["--temperature", "0"], ["--temperature", "1.0", "--top_p", "1.0"]])
def test_tiny_model_interrupted_and_resumed_gives_the_uninterrupted_table(
    tmp_path, benchmark_files, media_root, tiny_model_dir, decoding
):
    # Greedy, and seeded sampling (the seed is set before every batch, so a resumed run draws the same tokens).
    from videorft_hf.scripts.eval import main

    common = ["--model_name_or_path", str(tiny_model_dir), "--media_root", str(media_root)]
    common += ["--benchmarks", str(benchmark_files["vsi"]), "--batch_size", "2", *decoding]
    common += ["--max_new_tokens", "6", "--cache_dir", str(tmp_path / "cache"), "--progress", "false"]
    for name, value in SMALL.items():
        common += [f"--{name}", str(value)]
    assert main(common + ["--output_dir", str(tmp_path / "full")]) == 0
    assert main(common + ["--output_dir", str(tmp_path / "resumed"), "--max_samples", "2"]) == 0  # interrupted
    partial = json.loads((tmp_path / "resumed" / "VSI-Bench.json").read_text())["samples"]
    assert [s["problem_id"] for s in partial] == [1, 2]
    assert main(common + ["--output_dir", str(tmp_path / "resumed")]) == 0  # resumed

    full = json.loads((tmp_path / "full" / "results.json").read_text())
    resumed = json.loads((tmp_path / "resumed" / "results.json").read_text())
    assert resumed["benchmarks"] == full["benchmarks"]
    assert full["benchmarks"]["VSI-Bench"]["num_errors"] == 1
    full_samples = json.loads((tmp_path / "full" / "VSI-Bench.json").read_text())["samples"]
    resumed_samples = json.loads((tmp_path / "resumed" / "VSI-Bench.json").read_text())["samples"]
    assert [s["output"] for s in resumed_samples] == [s["output"] for s in full_samples]
    assert all(isinstance(s["output"], str) for s in full_samples if s["error"] is None)
    if decoding[1] != "0":  # sampled outputs differ from sample to sample: each landed on its own sample
        assert len({s["output"] for s in full_samples if s["error"] is None}) > 1
    assert (tmp_path / "full" / "results.md").read_text() == (tmp_path / "resumed" / "results.md").read_text()


def test_batched_generation_equals_one_by_one_and_qwen3_vl_works(tmp_path, benchmark_files, media_root):
    # Left padding must not change a greedy output; Qwen3-VL (patch factor 32, timestamps) takes the same path.
    for family in ("qwen2_5_vl", "qwen3_vl"):
        model, processor = build_tiny_vlm(family)
        outputs = {}
        for batch_size in (1, 3):
            generator = TransformersGenerator(model, processor, max_new_tokens=5, temperature=0)
            args = _args(tmp_path, benchmark_files, media_root, f"{family}-{batch_size}", batch_size=batch_size)
            run_evaluation(args, generator=generator)
            samples = json.loads((tmp_path / f"{family}-{batch_size}" / "Mixed.json").read_text())["samples"]
            outputs[batch_size] = [s["output"] for s in samples]
        assert outputs[1] == outputs[3]
        assert outputs[1][3] is None and all(isinstance(o, str) for o in outputs[1][:3])


def test_lora_adapter_is_merged(tmp_path, tiny_model_dir):
    import torch
    from peft import LoraConfig, get_peft_model

    model, _ = load_model_and_processor(str(tiny_model_dir), device="cpu")
    name = next(n for n, _ in model.named_modules() if n.endswith("language_model.layers.0.self_attn.q_proj"))
    config = LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(tmp_path / "adapter")
    expected = peft_model.merge_and_unload().get_submodule(name).weight.detach().clone()

    base, _ = load_model_and_processor(str(tiny_model_dir), device="cpu")
    merged, _ = load_model_and_processor(str(tiny_model_dir), str(tmp_path / "adapter"), device="cpu")
    assert not torch.equal(base.get_submodule(name).weight, expected)
    torch.testing.assert_close(merged.get_submodule(name).weight, expected)


def test_paper_recipe_parses_to_the_paper_settings():
    from videorft_hf.evaluation import PAPER_BENCHMARKS
    from videorft_hf.scripts.eval import make_parser

    recipe = os.path.join(os.path.dirname(__file__), "..", "recipes", "eval", "videorft.yaml")
    (args,) = make_parser().parse_args_and_config(["--config", recipe, "--model_name_or_path", "m"])
    assert [parse_benchmark_spec(spec).name for spec in args.benchmarks] == list(PAPER_BENCHMARKS)
    assert (args.temperature, args.top_p, args.max_new_tokens, args.system_prompt) == (0.1, 0.001, 1024, None)
    assert args.sampling_config() == VideoSamplingConfig.from_preset("videorft-eval")


def test_one_run_at_a_time_per_output_dir(tmp_path, benchmark_files, media_root):
    fcntl = pytest.importorskip("fcntl")
    args = _args(tmp_path, benchmark_files, media_root)
    os.makedirs(args.output_dir)
    with open(os.path.join(args.output_dir, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run holds it
        with pytest.raises(RuntimeError, match="Another videorft eval run"):
            run_evaluation(args, generator=ScriptedGenerator(ANSWERS))
    assert run_evaluation(args, generator=ScriptedGenerator(ANSWERS))["num_errors"] == 2


# --------------------------------------------------------------------------------------------- wrong paths, found early
def test_a_wrong_media_root_or_benchmark_path_stops_before_the_model_loads(
    tmp_path, benchmark_files, media_root, monkeypatch
):
    from videorft_hf.data import DataFileNotFoundError, MediaRootError

    monkeypatch.chdir(tmp_path)
    model = str(tmp_path / "no-model")  # loading it would fail: every error below must come first
    with pytest.raises(MediaRootError, match=r"^no/such/dir: the media root does not exist"):
        run_evaluation(_args(tmp_path, benchmark_files, "no/such/dir", model_name_or_path=model))
    # No --media_root: the './' paths point into the current folder, which holds none of them.
    with pytest.raises(MediaRootError) as info:
        run_evaluation(_args(tmp_path, benchmark_files, None, model_name_or_path=model))
    assert str(info.value) == (
        f"VSI-Bench: none of its 5 media files exist (the first: ./clips/a.mp4); the records' './' paths are relative "
        f"to the current folder ({tmp_path}), as --media_root is not set. Pass --media_root with the folder the "
        "benchmark's media was extracted into."
    )
    # A benchmark path that looks local and exists nowhere is a file-not-found naming it, never a Hub lookup.
    with pytest.raises(DataFileNotFoundError) as info:
        run_evaluation(_args(tmp_path, benchmark_files, media_root, benchmarks=["MVBench=eval_mvbench.json"]))
    assert str(info.value).startswith("eval_mvbench.json: benchmark 'MVBench' not found (looked for ")
    assert f"{tmp_path}/eval_mvbench.json and {media_root}/eval_mvbench.json" in str(info.value)


def test_relative_benchmark_paths_resolve_under_the_media_root(tmp_path, benchmark_files, media_root, monkeypatch):
    import shutil

    root = shutil.copytree(media_root, tmp_path / "Video-R1-eval")
    shutil.copy(benchmark_files["vsi"], root / "eval_vsibench.json")
    monkeypatch.chdir(tmp_path / "Video-R1-eval" / "clips")  # any folder but the one holding the file
    args = _args(tmp_path, benchmark_files, root, benchmarks=["VSI-Bench=eval_vsibench.json"])
    aggregate = run_evaluation(args, generator=ScriptedGenerator(ANSWERS))
    assert aggregate["benchmarks"]["VSI-Bench"]["num_scored"] == 4
    saved = json.loads((tmp_path / "out" / "VSI-Bench.json").read_text())
    assert saved["source"] == str(root / "eval_vsibench.json")


def test_missing_media_is_reported_as_missing_and_an_all_failed_run_exits_non_zero(
    tmp_path, media_root, tiny_model_dir, caplog, capsys
):
    from videorft_hf.scripts.eval import main

    rows = [
        _record(1, "multiple choice", "A", "./clips/broken.mp4", options=["A. x", "B. y"]),  # undecodable
        _record(2, "multiple choice", "A", "./clips/gone.mp4", options=["A. x", "B. y"]),  # missing
        _record(3, "numerical", "2", "./images/gone.png", data_type="image"),  # missing
    ]
    bench = tmp_path / "broken.jsonl"
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["--model_name_or_path", str(tiny_model_dir), "--media_root", str(media_root), "--benchmarks", str(bench)]
    argv += ["--output_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache"), "--progress", "false"]
    for name, value in SMALL.items():
        argv += [f"--{name}", str(value)]
    with caplog.at_level("WARNING", logger="videorft_hf.evaluation"):
        assert main(argv) == 1
    assert "broken: 2 of 3 samples have missing media files, 1 of 3 samples failed to decode" in caplog.text
    assert "No sample of broken could be scored" in capsys.readouterr().err
    samples = json.loads((tmp_path / "out" / "broken.json").read_text())["samples"]
    assert [s["error"].split(":")[0] for s in samples] == ["NotAVideoError", "VideoNotFoundError", "ImageNotFoundError"]


# --------------------------------------------------------------------------------------------- labels and formulas
def test_every_metric_label_matches_what_it_computes():
    """One definition each, computed here from the per-sample records: the score is the mean over every scored
    sample; "combined (accuracy and MRA)" is the sample-weighted mean over the multiple-choice and regression samples
    only; the labels say which; results.md states both and its formula gives the combined number."""
    import re

    mixed = [  # all five problem types, as the demo's held-out split
        ("multiple choice", 1.0), ("multiple choice", 1.0), ("multiple choice", 0.0),
        ("regression", 0.3), ("free-form", 0.2), ("OCR", 0.5), ("numerical", 0.0),
    ]
    vsi = [("multiple choice", 1.0), ("regression", 0.5)]
    records = {
        name: [{"problem_type": t, "score": v, "error": None} for t, v in rows]
        for name, rows in (("Mixed", mixed), ("VSI-Bench", vsi), ("MVBench", [("multiple choice", 1.0)]))
    }
    aggregate = aggregate_results(records)
    summary = aggregate["benchmarks"]["Mixed"]
    assert summary["score"] == pytest.approx(100 * (1 + 1 + 0 + 0.3 + 0.2 + 0.5 + 0) / 7)
    assert summary["combined"] == pytest.approx(100 * (1 + 1 + 0 + 0.3) / 4)  # MC and regression samples only
    n_mc, n_reg = 3, 1
    formula = (n_mc * summary["multiple_choice_accuracy"] + n_reg * summary["mean_relative_accuracy"]) / (n_mc + n_reg)
    assert summary["combined"] == pytest.approx(formula)
    assert aggregate["benchmarks"]["VSI-Bench"]["combined"] == aggregate["benchmarks"]["VSI-Bench"]["score"] == 75.0

    metrics = {
        result["dataset"]["name"]: {m["name"]: m["value"] for m in result["metrics"]}
        for result in results_to_model_index(aggregate, "m")[0]["results"]
    }
    label = "mean per-sample score over all problem types (OCR, free-form, multiple choice, numerical, regression)"
    assert metrics["Mixed"] == {
        label: round(summary["score"], 2),
        "combined (accuracy and MRA)": round(summary["combined"], 2),
        "multiple-choice accuracy": round(summary["multiple_choice_accuracy"], 2),
        "MRA": 30.0,
    }
    assert metrics["VSI-Bench"] == {"combined (accuracy and MRA)": 75.0, "multiple-choice accuracy": 100.0, "MRA": 50.0}
    assert metrics["MVBench"] == {"accuracy": 100.0}

    markdown = format_results_markdown(aggregate)
    assert f"| Mixed | {summary['score']:.1f} | 7 | 7 | 0 |" in markdown
    assert f"| Mixed | 66.7 | 30.0 | {summary['combined']:.1f} |" in markdown
    assert "(n_mc * accuracy + n_reg * MRA) / (n_mc + n_reg)" in markdown
    assert "over the multiple-choice and regression samples only" in markdown
    assert not re.search(r"combined score is the mean per-sample score over all samples", markdown)


def test_evaluation_warns_when_its_sampling_differs_from_the_training_record(tmp_path, caplog):
    """The model folder's run record says how training sampled video; an evaluation that samples otherwise warns,
    naming both and the flags that evaluate as trained; one that samples the same way does not."""
    from videorft_hf.evaluation import compare_with_training_sampling

    trained = VideoSamplingConfig.from_preset("video-r1-train", max_frames=4, min_pixels=3136, max_pixels=3136)
    model = tmp_path / "model"
    model.mkdir()
    (model / "videorft_run.json").write_text(
        json.dumps({"stage": "sft", "sampling": {"preset": "video-r1-train", **trained.to_dict()}})
    )
    with caplog.at_level("WARNING", logger="videorft_hf.evaluation"):
        found = compare_with_training_sampling(EvalArguments(model_name_or_path=str(model)))
    assert found["matches"] is False and found["sampling"] == trained.to_dict()
    (message,) = [r.getMessage() for r in caplog.records]
    assert "here 32 frames at 2 fps, 100352-200704 pixels per frame (preset videorft-eval)" in message
    assert "in training 4 frames at 2 fps, 3136 pixels per frame (preset video-r1-train" in message
    assert "max_frames 32 here, 4 in training" in message
    flags = "--video_sampling_preset video-r1-train --video_max_frames 4 --video_min_pixels 3136 --video_max_pixels 3136"
    assert f"pass {flags}." in message
    caplog.clear()
    args = EvalArguments(
        model_name_or_path=str(model), video_sampling_preset="video-r1-train", video_max_frames=4,
        video_min_pixels=3136, video_max_pixels=3136,
    )
    with caplog.at_level("WARNING", logger="videorft_hf.evaluation"):
        assert compare_with_training_sampling(args)["matches"] is True
    assert not caplog.records
    assert compare_with_training_sampling(EvalArguments(model_name_or_path=str(tmp_path))) is None  # no record
