"""`dopd-cli` (also `python -m dopd`): the one entry point the scripts call, like `llamafactory-cli`.

    dopd-cli train CONFIG.yaml [key=value ...]
    dopd-cli eval CONFIG.yaml [key=value ...]
    dopd-cli check-data CONFIG.yaml [key=value ...]
    dopd-cli export CONFIG.yaml [key=value ...]
    dopd-cli annotate CONFIG.yaml [key=value ...]
    dopd-cli render CONFIG.yaml [--num-samples N] [--save-images DIR] [key=value ...]
    dopd-cli probe CONFIG.yaml [key=value ...]      (before training: do DOPD's premises hold?)
    dopd-cli env
    dopd-cli version

`dopd-cli COMMAND --help` lists the keys COMMAND reads, with their help (all keys: docs/config.md).
`--verbose` (or DOPD_VERBOSE=1), with any command, also shows the libraries' start-up warnings that are hidden
otherwise (DeepSpeed's, unless the config names a `deepspeed` config; a peft/transformers deprecation).
"""

from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence

import dopd
from dopd.cli_help import command_help, wants_help
from dopd.env import print_env
from dopd.hparams import ConfigError
from dopd.verbosity import pop_verbose_flag, quiet_library_noise, uses_deepspeed, verbose_from_env

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
    # Imported here, not at the top: each command's module imports torch and transformers (heavy, and only the
    # command that runs needs them), and `main` must quiet the libraries' start-up noise before they are imported.
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


def _print_help(command: Optional[str]) -> None:
    """`dopd-cli --help` (the commands) or `dopd-cli COMMAND --help` (its usage and keys)."""
    if command is None:
        print(USAGE)
        return
    print(command_help(command, USAGE))


def main(argv: Optional[Sequence[str]] = None) -> None:
    flag, argv = pop_verbose_flag(sys.argv[1:] if argv is None else argv)
    verbose = flag or verbose_from_env()
    if not argv or argv[0] in ("-h", "--help", "help"):
        _print_help(argv[1] if len(argv) > 1 and argv[0] == "help" else None)
        sys.exit(0 if argv else 1)
    cmd, rest = argv[0], argv[1:]
    config, overrides = _split(rest)
    # before any command module is imported: transformers/accelerate import deepspeed when it is installed
    quiet_library_noise(show_deepspeed=verbose or uses_deepspeed(config, overrides), show_deprecations=verbose)
    fn = None
    if cmd not in ("env", "version"):
        try:
            fn = _command(cmd)
        except KeyError:
            print(f"dopd-cli: unknown command `{cmd}`\n{USAGE}", file=sys.stderr)
            sys.exit(2)
    if wants_help(rest):
        _print_help(cmd)
        sys.exit(0)
    if cmd == "env":
        print_env()
        return
    if cmd == "version":
        print(dopd.__version__)
        return
    try:
        code = fn(config, overrides)
    except ConfigError as err:
        print(f"dopd-cli {cmd}: configuration error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)
