"""`dopd-cli env`: versions a bug report needs.

Versions come from the installed distributions' metadata (`importlib.metadata`), and each package is then imported
to say whether it works here. `qwen_vl_utils` is checked the way dopd uses it: its module imports torchvision, which
this project does not install, so a plain `import qwen_vl_utils` fails although dopd's image path (through
`dopd.model.adapters.qwen_vl.vision_utils`) works; the report says whether that path resizes an image.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform

#: (module, distribution) reported, in order
PACKAGES = (
    ("torch", "torch"), ("transformers", "transformers"), ("peft", "peft"), ("accelerate", "accelerate"),
    ("deepspeed", "deepspeed"), ("datasets", "datasets"), ("qwen_vl_utils", "qwen-vl-utils"),
    ("torchvision", "torchvision"), ("wandb", "wandb"),
)


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _error(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def qwen_vl_utils_status() -> str:
    """`works` when qwen-vl-utils resizes an image through dopd's import of it, else why not."""
    try:  # imported here, inside the try: a broken torch / transformers / qwen-vl-utils is reported, not raised
        from PIL import Image

        from dopd.model.adapters.qwen_vl.vision_utils import fetch_image

        out = fetch_image(Image.new("RGB", (64, 48)), patch_size=14, min_pixels=28 * 28, max_pixels=128 * 128)
        return "works" if out.size[0] % 28 == 0 and out.size[1] % 28 == 0 else f"unexpected size {out.size}"
    except Exception as err:  # report, do not crash
        return f"fails ({_error(err)})"


def package_status(module: str, dist: str) -> str:
    """`<version>` when installed and importable; `not installed`; or `<version> (import fails: ...)`."""
    version = _dist_version(dist)
    if version is None:
        return "not installed"
    if module == "qwen_vl_utils":
        return f"{version} (image path: {qwen_vl_utils_status()})"
    try:
        importlib.import_module(module)
    except Exception as err:  # an optional package may be broken (e.g. a CUDA-only wheel); report, do not crash
        return f"{version} (import fails: {_error(err)})"
    return version


def collect_env() -> dict[str, str]:
    info = {"dopd": importlib.import_module("dopd").__version__, "python": platform.python_version(),
            "platform": platform.platform()}
    for module, dist in PACKAGES:
        info[module] = package_status(module, dist)
    try:
        import torch

        info["cuda available"] = str(torch.cuda.is_available())
        if torch.cuda.is_available():
            info["cuda"] = str(torch.version.cuda)
            info["gpus"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except Exception:
        pass
    return info


def print_env() -> None:
    info = collect_env()
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"- {key.ljust(width)} : {value}")
