import subprocess
import sys

import pytest

from dopd.hparams import ConfigError, parse_config
from dopd.hparams.parser import path_key


def write(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return str(path)


def test_yaml_and_overrides_are_typed(tmp_path):
    cfg = parse_config(
        write(tmp_path, "model_name_or_path: m\nlearning_rate: 5e-6\nlora_rank: 16\noutput_dir: " + str(tmp_path)),
        ["lora_rank=32", "beta_w=0.25", "bf16=false", "num_generations=2"],
    )
    assert cfg.model.model_name_or_path == "m"
    assert cfg.training.learning_rate == pytest.approx(5e-6)  # YAML 1.1 reads 5e-6 as a string
    assert cfg.finetuning.lora_rank == 32  # the override wins
    assert cfg.distill.beta_w == pytest.approx(0.25)
    assert cfg.rollout.num_generations == 2
    assert cfg.training.bf16 is False
    assert cfg.training.remove_unused_columns is False


def test_paper_defaults():
    cfg = parse_config(None, [], with_training=False)
    assert (cfg.distill.distill_top_k, cfg.distill.beta_l, cfg.distill.beta_w) == (128, 0.6, 0.3)
    assert cfg.distill.trim_fraction == pytest.approx(0.05)
    assert cfg.finetuning.stage == "dopd"
    assert cfg.rollout.num_generations == 4
    assert cfg.training is None


def test_unknown_key_names_close_matches(tmp_path):
    with pytest.raises(ConfigError) as err:
        parse_config(write(tmp_path, "lora_rnak: 8\n"), [])
    message = str(err.value)
    assert "lora_rnak" in message and "lora_rank" in message and "cfg.yaml" in message


def test_unknown_override_key():
    with pytest.raises(ConfigError, match="teacher_model_name_or_pth.*teacher_model_name_or_path"):
        parse_config(None, ["teacher_model_name_or_pth=x"], with_training=False)


def test_bad_value_type():
    with pytest.raises(ConfigError, match="lora_rank"):
        parse_config(None, ["lora_rank=eight"], with_training=False)


def test_override_without_equals():
    with pytest.raises(ConfigError, match="key=value"):
        parse_config(None, ["lora_rank"], with_training=False)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        parse_config(str(tmp_path / "nope.yaml"), [])


def test_every_field_has_help():
    import dataclasses

    from dopd.hparams.parser import OUR_DATACLASSES
    from dopd.hparams.training_args import DOPDTrainingArguments

    ours = {f.name for cls in OUR_DATACLASSES for f in dataclasses.fields(cls)}
    ours |= {"remove_unused_columns", "plot_loss", "sft_view"}
    for cls in list(OUR_DATACLASSES) + [DOPDTrainingArguments]:
        for f in dataclasses.fields(cls):
            if f.name in ours:
                assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help string"


def test_cli_env_and_unknown_key(tmp_path):
    env = subprocess.run([sys.executable, "-m", "dopd", "env"], capture_output=True, text=True, timeout=120)
    assert env.returncode == 0 and "transformers" in env.stdout and "cuda available" in env.stdout
    bad = subprocess.run([sys.executable, "-m", "dopd", "train", write(tmp_path, "datset: x\n")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "unknown key `datset`" in bad.stderr and "dataset" in bad.stderr


def test_config_reference_is_current():
    from pathlib import Path

    from dopd.hparams.reference import render_reference

    doc = Path(__file__).resolve().parents[2] / "docs" / "config.md"
    assert doc.read_text() == render_reference(), "regenerate: python -m dopd.hparams.reference > docs/config.md"


def test_pure_bf16_reads_auto_dtype_as_bfloat16(tmp_path):
    cfg = parse_config(write(tmp_path, "model_name_or_path: m\npure_bf16: true\noutput_dir: " + str(tmp_path)))
    assert cfg.finetuning.pure_bf16 is True
    assert cfg.model.torch_dtype == "bfloat16"


@pytest.mark.parametrize("extra, words", [("torch_dtype: float32", ["pure_bf16", "torch_dtype", "'float32'"]),
                                          ("deepspeed: ds.json", ["pure_bf16", "DeepSpeed"])])
def test_pure_bf16_refuses_what_it_cannot_mean(tmp_path, extra, words):
    path = write(tmp_path, f"model_name_or_path: m\npure_bf16: true\n{extra}\noutput_dir: {tmp_path}")
    with pytest.raises(ConfigError) as err:
        parse_config(path)
    assert all(w in str(err.value) for w in words) and path in str(err.value)


def test_resume_key_says_what_true_does():
    """transformers' own help ('Not directly used by Trainer') is wrong for dopd-cli train, which resumes with it."""
    from dopd.hparams.reference import render_reference

    row = next(line for line in render_reference().splitlines() if line.startswith("| `resume_from_checkpoint`"))
    assert "Not directly used" not in row
    assert "`true`" in row and "checkpoint-N" in row and "optimizer" in row


def test_recipes_parse_without_deprecated_keys():
    """The recipes used `gradient_checkpointing`, which transformers 5 warns is deprecated (`activation_checkpointing`)."""
    import warnings
    from pathlib import Path

    recipes = sorted((Path(__file__).resolve().parents[2] / "configs" / "recipes").glob("*.yaml"))
    assert recipes
    for recipe in recipes:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            cfg = parse_config(str(recipe), ["use_cpu=true", "bf16=false", "deepspeed="])
        assert cfg.training.activation_checkpointing and cfg.training.gradient_checkpointing, recipe.name


def test_paths_with_a_home_tilde_are_expanded(tmp_path, monkeypatch):
    """`~/...` in a YAML path key means the home folder, as in a shell (configs/probe/real_pair_probe.yaml)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("model_name_or_path: ~/student\nteacher_model_name_or_path: ~/teacher\n"
                        "dataset_dir: ~/data\noutput_dir: ~/out\n")
    cfg = parse_config(str(cfg_file), [])
    assert cfg.model.model_name_or_path == str(tmp_path / "student")
    assert cfg.model.teacher_model_name_or_path == str(tmp_path / "teacher")
    assert cfg.data.dataset_dir == str(tmp_path / "data")
    assert cfg.model.model_name_or_path.startswith("/")


def test_deepspeed_and_resume_paths_with_a_home_tilde_are_expanded(tmp_path, monkeypatch):
    """Path keys whose names carry no path suffix: the DeepSpeed config file and the checkpoint to resume from."""
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = parse_config(None, ["model_name_or_path=tiny:llm", "resume_from_checkpoint=~/run/checkpoint-2",
                              f"output_dir={tmp_path / 'out'}"])
    assert cfg.training.resume_from_checkpoint == str(tmp_path / "run" / "checkpoint-2")
    assert path_key("deepspeed") and path_key("resume_from_checkpoint") and not path_key("learning_rate")


def test_probe_default_lr_grid_is_the_configured_lr_times_factors_without_float_noise():
    cfg = parse_config(None, ["model_name_or_path=tiny:llm", "learning_rate=3e-6"], with_training=False)
    assert cfg.probe.lr_grid(3e-6) == [3e-7, 9e-7, 3e-6, 9e-6]  # not 3.0000000000000004e-07 in the report
    assert parse_config(None, ["probe_lr_grid=1e-5,3e-5"], with_training=False).probe.lr_grid(1.0) == [1e-5, 3e-5]
