"""Third-party messages every command would print and that concern nothing the user did.

Each filter below drops one message, named by its logger (or warning category and module) and its text, so that
everything else those libraries say still reaches the user. They are installed when the package is imported, before
anything imports peft, DeepSpeed or transformers' models.

- bitsandbytes (imported by peft whenever it is installed, so by everything that imports trl's configs) warns at
  import, on CPUs with AVX512-bf16, that an optional CPU kernel for 4-bit matmuls is missing: it concerns only 4-bit
  models run on CPU, where bitsandbytes falls back to its own kernel. Looking for that kernel, bitsandbytes asks the
  `kernels` package (a transformers dependency), which, with `HF_HUB_OFFLINE=1`, warns that it skips the kernel's
  publisher check.
- DeepSpeed (imported by transformers and accelerate whenever it is installed) logs "Setting accelerator to CPU" on
  every machine without a GPU, whether or not the run uses DeepSpeed.
- transformers 5.25 renamed gradient checkpointing to activation checkpointing. trl 1.16's trainers call the old
  model methods (`gradient_checkpointing_enable`, `gradient_checkpointing_disable`, `is_gradient_checkpointing`), each
  of which now warns; the package's configs use the new training argument, `activation_checkpointing` (a recipe that
  writes `gradient_checkpointing` still works, and transformers still tells its author about the new name).
- transformers' default `SiglipTextConfig` holds CLIP's token ids (49406, 49407) with SigLIP's vocabulary of 32,000,
  and every SigLIP config builds that default to serialise itself (when it is saved, and when it is logged as it
  loads), so loading any SigLIP model (the semantic-consistency reward, the test kit's tiny one) warns that the
  default's ids are out of its vocabulary.
"""

import logging
import re
import warnings

logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
    lambda record: not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward")
)
logging.getLogger("kernels._internals.hf_hub").addFilter(
    lambda record: "kernels-community/quantization-bitsandbytes" not in str(record.msg)
)
logging.getLogger("DeepSpeed").addFilter(
    lambda record: not str(record.msg).startswith("Setting accelerator to CPU.")
)
warnings.filterwarnings(
    "ignore",
    message=r"`(is_gradient_checkpointing|gradient_checkpointing_enable|gradient_checkpointing_disable)` is deprecated",
    category=FutureWarning,
    module=r"transformers\.modeling_utils",
)
_SIGLIP_DEFAULT_IDS = re.compile(
    r"(bos|eos)_token_id must be `None` or an integer within the vocabulary \(between 0 and 31999\), got 4940[67]\b"
)
logging.getLogger("transformers.configuration_utils").addFilter(
    lambda record: not _SIGLIP_DEFAULT_IDS.search(str(record.msg))
)
