"""Third-party messages every command would print and that concern none of them.

peft imports bitsandbytes whenever it is installed (so does everything that imports trl's configs), and on CPUs with
AVX512-bf16 bitsandbytes then warns, at import, that an optional CPU kernel for 4-bit matmuls is missing. Every
`videorft` command would print it, `--help` included, though it concerns only 4-bit models run on CPU (where
bitsandbytes falls back to its own kernel). Looking for that kernel, bitsandbytes asks the `kernels` package (a
transformers dependency), which, with `HF_HUB_OFFLINE=1`, warns that it skips the kernel's publisher check. These
filters drop those two messages; they run when the package is imported, before anything imports peft.
"""

import logging

logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
    lambda record: not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward")
)
logging.getLogger("kernels._internals.hf_hub").addFilter(
    lambda record: "kernels-community/quantization-bitsandbytes" not in str(record.msg)
)
