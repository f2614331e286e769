"""`dopd-cli` (also `python -m dopd`): the one entry point the scripts call, like `llamafactory-cli`.

    dopd-cli train CONFIG.yaml [key=value ...]
    dopd-cli eval CONFIG.yaml [key=value ...]
    dopd-cli check-data CONFIG.yaml [key=value ...]
    dopd-cli export CONFIG.yaml [key=value ...]
    dopd-cli annotate CONFIG.yaml [key=value ...]
    dopd-cli render CONFIG.yaml [--num-samples N] [key=value ...]
    dopd-cli probe CONFIG.yaml [key=value ...]      (before training: do DOPD's premises hold?)
    dopd-cli env
"""

from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence

USAGE = __doc__


def _split(argv: Sequence[str]) -> tuple[Optional[str], list[str]]:
    """First non-override argument ending in .yaml/.yml is the config; the rest are key=value overrides."""
    config, overrides = None, []
    for arg in argv:
        if config is None and "=" not in arg and arg.endswith((".yaml", ".yml", ".json")):
            config = arg
        else:
            overrides.append(arg)
    return config, overrides


def _command(name: str) -> Callable[[Optional[str], list[str]], int]:
    if name == "train":
        from dopd.train.workflow import run_train_cli as fn
    elif name == "eval":
        from dopd.eval.workflow import run_eval_cli as fn
    elif name == "check-data":
        from dopd.model.check_data import run_check_data_cli as fn
    elif name == "export":
        from dopd.model.export import run_export_cli as fn
    elif name == "annotate":
        from dopd.annotate.workflow import run_annotate_cli as fn
    elif name == "render":
        from dopd.train.render import run_render_cli as fn
    elif name == "probe":
        from dopd.train.probe import run_probe_cli as fn
    else:
        raise KeyError(name)
    return fn


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        sys.exit(0 if argv else 1)
    cmd, rest = argv[0], argv[1:]
    if cmd == "env":
        from dopd.env import print_env

        print_env()
        return
    if cmd == "version":
        import dopd

        print(dopd.__version__)
        return
    try:
        fn = _command(cmd)
    except KeyError:
        print(f"dopd-cli: unknown command `{cmd}`\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    from dopd.hparams import ConfigError

    config, overrides = _split(rest)
    try:
        code = fn(config, overrides)
    except ConfigError as err:
        print(f"dopd-cli {cmd}: configuration error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)
