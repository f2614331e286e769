"""Where a model name points: `tiny:` names of tiny random-init models, built on first use; anything else as given.

Every command that loads a model (train, eval, check-data, render, annotate's local backend) resolves the name here
first, so `tiny:<family>` works wherever a model folder or hub id does.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Optional

from dopd.hparams import ConfigError

logger = logging.getLogger("dopd")

TINY_PREFIX = "tiny:"


def tiny_root() -> str:
    """The folder tiny models are built in: `$DOPD_TINY_DIR`, else `models/tiny` (relative to the working dir)."""
    return os.environ.get("DOPD_TINY_DIR", os.path.join("models", "tiny"))


def resolve_model_path(name_or_path: Optional[str], role: str) -> Optional[str]:
    """`tiny:<family>[:<size>[:<tokenizer>]]` names a tiny random-init model, built under `models/tiny/` (or
    `$DOPD_TINY_DIR`) on first use (the offline demo and tests use these); anything else goes to `from_pretrained`.
    `role` ("student" or "teacher") is the default size."""
    if not name_or_path or not name_or_path.startswith(TINY_PREFIX):
        return name_or_path
    from .tiny import build_tiny_model

    parts = name_or_path.split(":")[1:]
    family = parts[0]
    size = parts[1] if len(parts) > 1 else ("teacher" if role == "teacher" else "student")
    tokenizer = parts[2] if len(parts) > 2 else "bpe"
    out_dir = os.path.join(tiny_root(), f"{family}-{size}-{tokenizer}")
    ready = os.path.join(out_dir, "dopd_tiny.json")  # written last by build_tiny_model
    if int(os.environ.get("LOCAL_RANK", "0")) != 0:
        # only local rank 0 builds (save_pretrained writes weights on the main process only); the others wait
        deadline = time.monotonic() + 600
        while not os.path.isfile(ready):
            if time.monotonic() > deadline:
                raise ConfigError(f"timed out waiting for local rank 0 to build {out_dir}")
            time.sleep(0.5)
    elif not os.path.isfile(ready):
        logger.info("building tiny %s %s model (%s tokenizer) in %s", family, size, tokenizer, out_dir)
        private = f"{out_dir}.building-{os.getpid()}"
        build_tiny_model(family, private, size=size, tokenizer=tokenizer)
        try:
            os.rename(private, out_dir)  # atomic: a reader never sees a half-written folder
        except OSError:  # another job finished first; the build is deterministic
            shutil.rmtree(private, ignore_errors=True)
    return out_dir
