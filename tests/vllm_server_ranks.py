"""Run under `accelerate launch --num_processes 2` by tests/test_trainer.py: server-mode vLLM rollouts across two
processes. Rank 0 hosts the loopback server (tests/vllm_server.py) and talks to it, as trl's main process does; rank
0's rows are video, rank 1's are an image and a text row, so trl gathers media that is None on one side.

    python vllm_server_ranks.py MODEL_DIR VIDEO0 VIDEO1 IMAGE OUT_DIR
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from datasets import Dataset  # noqa: E402
from test_trainer import SAMPLING, _server_generation, length_reward, user  # noqa: E402
from vllm_server import FakeVLLMServer  # noqa: E402

from videorft_hf.configs import VideoGRPOConfig  # noqa: E402
from videorft_hf.trainer import VideoGRPOTrainer  # noqa: E402


def main(model_dir, video0, video1, image, out_dir):
    args = VideoGRPOConfig(
        output_dir=out_dir, per_device_train_batch_size=4, num_generations=2, max_completion_length=6, report_to=[],
        use_cpu=True, bf16=False, save_strategy="no", seed=0, **SAMPLING,
    )
    rows = [{"prompt": user("video", "What moves?"), "video": video0, "image": None}] * 2
    rows += [{"prompt": user("video", "How many?"), "video": video1, "image": None}] * 2
    other = [{"prompt": user("image", "What colour?"), "video": None, "image": image}] * 2
    other += [{"prompt": user(None, "Say hi."), "video": None, "image": None}] * 2
    trainer = VideoGRPOTrainer(model_dir, reward_funcs=[length_reward], args=args, train_dataset=Dataset.from_list(rows))
    rank = trainer.accelerator.process_index
    server = None
    if trainer.accelerator.is_main_process:
        import trl.generation.vllm_client as vllm_client

        vllm_client.is_vllm_available = lambda *a, **k: True  # the client's requests need no local vLLM
        server = FakeVLLMServer(trainer.processing_class, eos_token_id=trainer.eos_token_ids[0]).__enter__()
        client = vllm_client.VLLMClient(base_url=server.url, connection_timeout=10)
    else:
        client = None
    generation = _server_generation(trainer, client)
    if client is None:
        del generation.vllm_client  # trl creates the client on the main process only
    trainer.model.train()
    local = rows if rank == 0 else other
    output = trainer._generate_and_score_completions(local)
    result = {
        "rank": rank,
        "completions": int(output["completion_ids"].shape[0]),
        "prompt_ids": [output["prompt_ids"][i][output["prompt_mask"][i].bool()].tolist() for i in range(len(local))],
        "group_ids": output["group_ids"].tolist(),
    }
    if server is not None:
        result["server"] = [{"token_ids": g["token_ids"], "placed": g["placed"], "n": g["n"]} for g in server.generations]
        result["renders"] = len(server.renders)
        server.__exit__(None, None, None)
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:6])
