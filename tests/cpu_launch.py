"""Entry point and reward for the distributed tests: `videorft sft|grpo` under `accelerate launch` on CPU processes.

    accelerate launch --config_file recipes/accelerate_configs/fsdp.yaml --num_processes 2 \\
        tests/cpu_launch.py sft --config recipes/tiny/sft.yaml ...
    DS_ACCELERATOR=cpu accelerate launch --config_file recipes/accelerate_configs/zero3.yaml --num_processes 2 \\
        tests/cpu_launch.py grpo --config recipes/tiny/grpo.yaml --use_cpu false ...

accelerate (1.15) sets up FSDP and DeepSpeed only on an accelerator. This entry point completes the steps it skips on
a CPU-only host, and nothing else, then runs the command's `main`:

- FSDP: CPU processes launched with the FSDP config get the FSDP plugin built from that config, but their state stays
  MULTI_CPU (the model would be wrapped in DDP). The state's `distributed_type` becomes FSDP and the plugin takes
  the mixed precision, as accelerate does on a GPU.
- DeepSpeed (`use_cpu: false`, DeepSpeed's CPU accelerator): accelerate finds no backend without an accelerator, so
  every process would believe it is alone; the processes get gloo, the backend DeepSpeed's CPU accelerator names.
  transformers accepts `bf16: true` only with a GPU or `use_cpu`; DeepSpeed's CPU accelerator runs bf16.

Everything after that is the code path of a GPU run: `fully_shard` with the recipe's wrap policy or the DeepSpeed
engine with the recipe's ZeRO stage, mixed precision, parameter gathering for generation, the reference model,
the gathered state dict on save, the sharded checkpoint and its reload on resume.

`completion_length_reward` is a reward that differs within a group (a random tiny model never earns the accuracy or
format reward, so every advantage would be zero and nothing would train). With `VIDEORFT_TEST_REWARD_LOG` set to a
folder, each process also appends what it scored to `rewards-rank<RANK>.jsonl` there, so that a test can see which
rows each rank got and compare with the rewards the trainer logged after gathering them from every rank.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

import torch


def completion_length_reward(completions, problem_id=None, **kwargs) -> list[float]:
    """A tenth of each completion's character count."""
    rewards = [len(c if isinstance(c, str) else c[0]["content"]) / 10 for c in completions]
    log_dir = os.environ.get("VIDEORFT_TEST_REWARD_LOG")
    if log_dir:
        line = {"problem_id": list(problem_id or []), "rewards": rewards}
        with open(os.path.join(log_dir, f"rewards-rank{os.environ.get('RANK', '0')}.jsonl"), "a") as f:
            f.write(json.dumps(line) + "\n")
    return rewards


def _fsdp_on_cpu_processes() -> None:
    from accelerate import state as accelerate_state
    from accelerate.utils import DistributedType

    init = accelerate_state.AcceleratorState.__init__

    def __init__(self, mixed_precision=None, cpu=False, dynamo_plugin=None, deepspeed_plugin=None, fsdp_plugin=None,
                 *args, **kwargs):
        init(self, mixed_precision, cpu, dynamo_plugin, deepspeed_plugin, fsdp_plugin, *args, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            if self._mixed_precision != "no":
                fsdp_plugin.set_mixed_precision(self._mixed_precision)
            self.fsdp_plugin = fsdp_plugin
            # As accelerate does: later `AcceleratorState()` calls copy the partial state's type back.
            accelerate_state.PartialState._shared_state["distributed_type"] = self.distributed_type

    accelerate_state.AcceleratorState.__init__ = __init__


def _deepspeed_on_cpu_processes() -> None:
    import transformers.training_args
    from accelerate import state as accelerate_state
    from accelerate.utils import DistributedType

    prepare_backend = accelerate_state.PartialState._prepare_backend

    def _prepare_backend(self, cpu=False, sagemaker_dp=False, backend=None):
        found, distributed_type = prepare_backend(self, cpu, sagemaker_dp, backend)
        if found is None and not cpu and int(os.environ.get("LOCAL_RANK", -1)) != -1:
            return "gloo", DistributedType.MULTI_CPU  # the state becomes DEEPSPEED once DeepSpeed has initialised
        return found, distributed_type

    accelerate_state.PartialState._prepare_backend = _prepare_backend
    transformers.training_args.is_torch_bf16_gpu_available = lambda *args, **kwargs: True


def main(argv: list[str]) -> int:
    command, *args = argv
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        _fsdp_on_cpu_processes()
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true" and not torch.cuda.is_available():
        _deepspeed_on_cpu_processes()
    return importlib.import_module(f"videorft_hf.scripts.{command}").main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
