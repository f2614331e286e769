"""`dopd-cli env`: versions a bug report needs."""

from __future__ import annotations

import importlib
import platform


def collect_env() -> dict[str, str]:
    info = {"dopd": importlib.import_module("dopd").__version__, "python": platform.python_version(),
            "platform": platform.platform()}
    for name in ("torch", "transformers", "peft", "accelerate", "deepspeed", "datasets", "qwen_vl_utils", "wandb"):
        try:
            mod = importlib.import_module(name)
            info[name] = getattr(mod, "__version__", "installed")
        except Exception as err:  # an optional package may be absent or broken; report, do not crash
            info[name] = f"not available ({type(err).__name__})"
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
