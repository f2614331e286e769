"""transformers prints "Running in WANDB offline mode" when its integrations module is first imported with
WANDB_MODE=offline set, whatever `report_to` says: our config parsing keeps it to runs that report to wandb.
Each case runs in a fresh interpreter (the notice is printed once per process, at first import)."""

import os
import subprocess
import sys

import pytest

CODE = """
from dopd.hparams.parser import parse_config_dict
parse_config_dict({{"output_dir": {out!r}, "report_to": {report_to!r}}})
import os; assert os.environ["WANDB_MODE"] == "offline"  # the user's environment is left as it was
"""


@pytest.mark.parametrize("report_to,shown", [("none", False), ("wandb", True)])
def test_wandb_offline_notice_only_when_reporting_to_wandb(tmp_path, report_to, shown):
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", CODE.format(out=str(tmp_path), report_to=report_to)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ("WANDB offline mode" in proc.stdout + proc.stderr) is shown
