"""Loaded by every Python process of the vLLM tests (`make test-vllm` puts this folder on PYTHONPATH, and the tests
pass it on to the processes vLLM and the tests start: vLLM's model inspection, its engine core, the API server).

CPU-only workaround: the package index's torchvision for torch 2.13 is a CUDA build. Its C extension needs
`libc10_cuda.so`, which a CPU torch lacks, so the extension does not load, and `import torchvision` then fails while
registering fake kernels for the two operators its Python code declares without the extension (`torchvision::nms`,
`torchvision::qnms`). Declaring those two schemas first lets torchvision import; the tests use only its transforms,
which need no compiled operator.
"""

import importlib.util


def _declare_torchvision_ops() -> None:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    import glob
    import os

    import torch

    extension = glob.glob(os.path.join(spec.submodule_search_locations[0], "_C*.so"))
    try:
        if extension:
            torch.ops.load_library(extension[0])
            return  # a build that loads here declares its operators itself
    except OSError:
        pass
    library = torch.library.Library("torchvision", "DEF")
    library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    globals()["_TORCHVISION_LIBRARY"] = library  # the schemas live as long as the Library object


_declare_torchvision_ops()
