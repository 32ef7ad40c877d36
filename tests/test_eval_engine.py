"""`videorft eval` on the rollout engine (`--generation_engine compiled`): the same outputs and scores as the
transformers backend's `model.generate` (the reference), argument resolution, and the engine recorded in results.json.

The tiny models get weights spread wider than their initialisation (as in tests/test_rollout.py), so greedy decoding
has clear winners (a gap far above fp32 rounding) and varies from token to token: equal outputs mean equal tokens,
not ties broken alike.
"""

import json

import pytest
import torch

from videorft_hf.evaluation import EvalArguments, TransformersGenerator, run_evaluation
from videorft_hf.evaluation.arguments import resolve_generation_engine
from videorft_hf.testing import build_tiny_vlm, make_record, write_test_image, write_test_video

SMALL = dict(video_min_frames=4, video_max_frames=4, video_min_pixels=56 * 56, video_max_pixels=56 * 56)
SMALL.update(image_min_pixels=56 * 56, image_max_pixels=56 * 56)
OPTIONS = ["A. red", "B. blue", "C. green", "D. white"]


@pytest.fixture(scope="module")
def media_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    write_test_video(root / "clips" / "a.mp4", num_frames=8, fps=4.0, width=64, height=48)
    write_test_video(root / "clips" / "b.mp4", num_frames=60, fps=2.0, width=56, height=56)  # 30 s: late positions
    write_test_image(root / "images" / "c.png", width=60, height=60)
    write_test_image(root / "images" / "d.png", width=56, height=84, index=3)
    return root


@pytest.fixture(scope="module")
def benchmark(media_root, tmp_path_factory):
    """Video and image rows of several prompt lengths (left padding in every batch of 3)."""
    rows = [
        make_record(1, "multiple choice", "A", "./clips/a.mp4", options=OPTIONS, problem="Which colour?"),
        make_record(2, "regression", "4", "./clips/b.mp4", problem="How far is the chair from the door, in metres?"),
        make_record(3, "OCR", "STOP HERE", "./images/c.png", data_type="image"),
        make_record(4, "numerical", "3", "./clips/b.mp4", problem="How many?"),
        make_record(5, "free-form", "a red square", "./images/d.png", data_type="image", problem="Describe it."),
    ]
    path = tmp_path_factory.mktemp("benchmarks") / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def spread(model, std=0.3, seed=1):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    return model


class Recording(TransformersGenerator):
    """The transformers backend, keeping the completion token ids of every batch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ids = []

    def generate_ids(self, samples):
        ids = super().generate_ids(samples)
        self.ids += [row[row != self.pad_token_id].tolist() for row in ids]
        return ids


def _args(tmp_path, benchmark, media_root, name, **overrides):
    values = dict(benchmarks=[f"Mixed={benchmark}"], media_root=str(media_root), output_dir=str(tmp_path / name),
                  batch_size=3, cache_dir=str(tmp_path / "cache"), progress=False, decode_workers=0,
                  max_new_tokens=12, temperature=0, **SMALL)
    values.update(overrides)
    return EvalArguments(**values)


def _samples(tmp_path, name):
    return json.loads((tmp_path / name / "Mixed.json").read_text())["samples"]


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_engine_gives_generates_outputs_and_scores(tmp_path, benchmark, media_root, family):
    model, processor = build_tiny_vlm(family)
    spread(model)
    runs, ids = {}, {}
    for engine in ("transformers", "compiled"):
        generator = Recording(model, processor, max_new_tokens=12, temperature=0, generation_engine=engine,
                              batch_size=3)
        assert generator.generation_engine == engine
        aggregate = run_evaluation(_args(tmp_path, benchmark, media_root, engine), generator=generator)
        assert aggregate["generation_engine"] == engine
        assert json.loads((tmp_path / engine / "results.json").read_text())["generation_engine"] == engine
        runs[engine], ids[engine] = _samples(tmp_path, engine), generator.ids
        if engine == "compiled":
            # One engine for the run: both batches (3 rows, then the last 2) ran at 3 rows on one static cache.
            assert generator.engine.allocations == 1 and list(generator.engine.cache_shapes) == [3]
            assert generator.engine.compile_seconds == {}  # CPU: eager decode step
    reference, ours = runs["transformers"], runs["compiled"]
    assert [s["error"] for s in reference] == [None] * 5
    # Greedy is meaningful: the samples' completions differ, and none repeats one token.
    assert len({tuple(r) for r in ids["transformers"]}) == 5 and all(len(set(r)) > 1 for r in ids["transformers"])
    assert ids["compiled"] == ids["transformers"]
    for field in ("output", "prediction", "score"):
        assert [s[field] for s in ours] == [s[field] for s in reference], field


def test_engine_samples_what_generate_samples(tmp_path, benchmark, media_root):
    # The paper's decoding (temperature 0.1, top_p 0.001) and plain sampling, seeded before every batch.
    model, processor = build_tiny_vlm("qwen2_5_vl")
    spread(model)
    for decoding in (dict(temperature=0.1, top_p=0.001), dict(temperature=1.0, top_p=1.0)):
        outputs, ids = {}, {}
        for engine in ("transformers", "compiled"):
            generator = Recording(model, processor, max_new_tokens=12, generation_engine=engine, batch_size=3,
                                  **decoding)
            name = f"{engine}-{decoding['temperature']}"
            run_evaluation(_args(tmp_path, benchmark, media_root, name, **decoding), generator=generator)
            outputs[engine], ids[engine] = [s["output"] for s in _samples(tmp_path, name)], generator.ids
        assert ids["compiled"] == ids["transformers"], decoding
        assert outputs["compiled"] == outputs["transformers"], decoding
        assert len({tuple(r) for r in ids["transformers"]}) == 5


def test_engine_resolution_and_bad_values():
    assert resolve_generation_engine(None, "cpu") == "transformers"
    assert resolve_generation_engine(None, "cuda") == "compiled"
    assert resolve_generation_engine(None, torch.device("cuda", 1)) == "compiled"
    assert resolve_generation_engine("compiled", "cpu") == "compiled"
    assert resolve_generation_engine("transformers", "cuda:0") == "transformers"
    assert EvalArguments(benchmarks=["a.json"]).generation_engine is None
    assert EvalArguments(benchmarks=["a.json"], device="cpu").resolved_generation_engine() == "transformers"
    assert EvalArguments(benchmarks=["a.json"], device="cuda:0").resolved_generation_engine() == "compiled"
    assert EvalArguments(benchmarks=["a.json"], backend="vllm").resolved_generation_engine() is None
    with pytest.raises(ValueError, match="generation_engine must be 'compiled'.*got 'fast'"):
        EvalArguments(benchmarks=["a.json"], generation_engine="fast")
    with pytest.raises(ValueError, match="vLLM generates with its own engine"):
        EvalArguments(benchmarks=["a.json"], backend="vllm", generation_engine="compiled")
    flash = EvalArguments(benchmarks=["a.json"], device="cuda", attn_implementation="flash_attention_2")
    with pytest.raises(ValueError, match="--attn_implementation sdpa, or --generation_engine transformers"):
        flash.resolved_generation_engine()
    model, processor = build_tiny_vlm("qwen2_5_vl")
    with pytest.raises(ValueError, match="got 'fast'"):
        TransformersGenerator(model, processor, generation_engine="fast")
    assert TransformersGenerator(model, processor).engine is None  # CPU default: model.generate


def test_cli_refuses_a_bad_engine_before_the_model_loads(tmp_path):
    from videorft_hf.scripts.arguments import ArgumentValueError
    from videorft_hf.scripts.eval import main

    with pytest.raises(ArgumentValueError, match="generation_engine must be .*got 'fast'.*--generation_engine"):
        main(["--model_name_or_path", str(tmp_path / "no-model"), "--benchmarks", "a.json",
              "--generation_engine", "fast"])


def test_cli_runs_the_compiled_engine_and_records_it(tmp_path, benchmark, media_root):
    from videorft_hf.scripts.eval import main

    model, processor = build_tiny_vlm("qwen2_5_vl")
    spread(model)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    common = ["--model_name_or_path", str(tmp_path / "model"), "--media_root", str(media_root),
              "--benchmarks", f"Mixed={benchmark}", "--batch_size", "2", "--temperature", "0", "--max_new_tokens", "8",
              "--cache_dir", str(tmp_path / "cache"), "--progress", "false", "--device", "cpu"]
    for name, value in SMALL.items():
        common += [f"--{name}", str(value)]
    outputs = {}
    for engine in ("compiled", "transformers"):
        assert main([*common, "--output_dir", str(tmp_path / engine), "--generation_engine", engine]) == 0
        assert json.loads((tmp_path / engine / "results.json").read_text())["generation_engine"] == engine
        outputs[engine] = [s["output"] for s in _samples(tmp_path, engine)]
    assert outputs["compiled"] == outputs["transformers"]
    assert main([*common, "--output_dir", str(tmp_path / "default")]) == 0  # on CPU: generate
    assert json.loads((tmp_path / "default" / "results.json").read_text())["generation_engine"] == "transformers"
