"""Real vLLM rollouts of video rows (GPU machines only: `pytest -m gpu tests/test_gpu_vllm.py`).

The default suite runs the same request-building code against trl's real `VLLMGeneration` with a stand-in engine
(`tests/test_trainer.py -k vllm`); these tests start vLLM itself, colocated, on a tiny random Qwen2.5-VL saved from
its config, so they need no download: only a CUDA device and `pip install 'videorft_hf[vllm]'`.
"""

import pytest
import torch
from datasets import Dataset

from videorft_hf.configs import VideoGRPOConfig
from videorft_hf.testing import save_tiny_vlm, write_test_video
from videorft_hf.trainer import VideoGRPOTrainer

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pytest.importorskip("vllm")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    root = tmp_path_factory.mktemp("gpu")
    model = save_tiny_vlm("qwen2_5_vl", root / "model")
    videos = [str(write_test_video(root / f"clip{i}.mp4", num_frames=16 + 8 * i, fps=8, width=56, height=56)) for i in range(2)]
    return model, videos


def test_colocated_vllm_trains_on_video_rows(setup, tmp_path):
    model, videos = setup
    rows = [
        {"prompt": [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": f"Clip {i}?"}]}], "video": videos[i % 2]}
        for i in range(4)
    ]
    args = VideoGRPOConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=2, max_completion_length=8,
        max_steps=2, report_to=[], save_strategy="no", bf16=True, use_vllm=True, vllm_mode="colocate",
        vllm_gpu_memory_utilization=0.2, vllm_max_model_length=2048, video_sampling_preset="video-r1-train",
        video_min_pixels=16 * 784, video_max_pixels=16 * 784,
    )
    trainer = VideoGRPOTrainer(
        str(model), reward_funcs=[lambda completions, **kw: [float(len(c[0]["content"])) for c in completions]],
        args=args, train_dataset=Dataset.from_list(rows),
    )
    trainer.train()
    assert trainer.media_counts["video_decodes"] >= 2
    assert trainer.state.log_history[0]["completions/mean_length"] > 0
