"""Resume restores exactly the checkpoint's weights, for every family and finetuning type, or raises.

Each test trains one step (checkpoint-1), resumes with learning rate 0 for one more step (checkpoint-2) and compares
every saved tensor of checkpoint-2 with checkpoint-1's: with no update, anything but bit-equality means resume did
not load what the checkpoint holds (Qwen2-VL and Qwen2.5-VL checkpoints store `visual.*` / `model.layers.*`, which
the Trainer's own loader did not convert: those runs went on from the base weights).
"""

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dopd.model.paths import resolve_model_path
from dopd.train.checkpoint import CheckpointMismatchError
from dopd.train.workflow import run_train

from .test_train_e2e import make_config, read_log, trainable_state

LORA = {"finetuning_type": "lora", "lora_rank": 4}


def _train_one_step(tmp_path, family, dataset, **overrides):
    cfg = make_config(tmp_path, family=family, dataset=dataset, max_steps=1, save_steps=1, **overrides)
    run_train(cfg)
    checkpoint = Path(cfg.training.output_dir) / "checkpoint-1"
    assert checkpoint.is_dir()
    return checkpoint


def _resume_one_step(tmp_path, family, dataset, checkpoint="true", **overrides):
    return run_train(make_config(tmp_path, family=family, dataset=dataset, max_steps=2, save_steps=1,
                                 learning_rate=0.0, resume_from_checkpoint=str(checkpoint), **overrides))


@pytest.mark.parametrize("family,dataset,overrides", [
    ("qwen2_vl", "vlm_demo", {}),
    ("qwen2_5_vl", "vlm_demo", {}),
    ("qwen3_vl", "vlm_demo", {}),
    ("qwen2", "llm_demo", {}),
    ("qwen2_5_vl", "vlm_demo", LORA),
    # the same loading path as above (full weights, qwen2 text): outside the default run to keep it short
    pytest.param("qwen3", "llm_demo", {}, marks=pytest.mark.slow),
    pytest.param("qwen2_vl", "vlm_demo", {"finetuning_type": "freeze", "freeze_trainable_layers": 1},
                 marks=pytest.mark.slow),
], ids=["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen2", "qwen2_5_vl-lora", "qwen3", "qwen2_vl-freeze"])
def test_resume_restores_every_tensor_of_the_checkpoint(tmp_path, family, dataset, overrides):
    checkpoint = _train_one_step(tmp_path, family, dataset, **overrides)
    saved = trainable_state(checkpoint)
    # the checkpoint is not the starting point, or equality below would not tell a resumed run from a fresh one
    if overrides.get("finetuning_type") == "lora":
        assert any(k.endswith("lora_B.weight") and saved[k].abs().max() > 0 for k in saved), "LoRA did not train"
    else:
        base = trainable_state(resolve_model_path(f"tiny:{family}:student", "student"))
        assert base.keys() == saved.keys()
        trained = [k for k in saved if not torch.equal(saved[k], base[k])]
        assert any(".layers." in k for k in trained), "no language-model weight changed in the first step"

    result = _resume_one_step(tmp_path, family, dataset, **overrides)
    assert result.global_step == 2
    (resumed,) = [r for r in read_log(checkpoint.parent) if "loss" in r and r["step"] == 2]
    assert resumed["learning_rate"] == 0.0  # no update: checkpoint-2 must hold what resume loaded
    again = trainable_state(checkpoint.parent / "checkpoint-2")
    assert again.keys() == saved.keys()
    differ = [k for k in saved if not torch.equal(again[k], saved[k])]
    assert not differ, f"{len(differ)} of {len(saved)} tensors differ from the checkpoint resumed from: {differ[:5]}"


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3"])
def test_tied_embeddings_resume_from_their_one_saved_copy(tmp_path, family):
    # real small Qwen checkpoints tie lm_head to the embeddings (the tiny ones do not): save_pretrained writes the
    # tensor once, and resume must neither call the other name missing nor untie the two
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    from dopd.train.checkpoint import load_checkpoint

    config = AutoConfig.from_pretrained(resolve_model_path(f"tiny:{family}:student", "student"))
    config.tie_word_embeddings = True
    if hasattr(config, "text_config"):
        config.text_config.tie_word_embeddings = True
    auto = AutoModelForImageTextToText if family.endswith("_vl") else AutoModelForCausalLM
    torch.manual_seed(0)
    saved = auto.from_config(config)
    saved.save_pretrained(str(tmp_path))
    assert not [k for k in load_file(str(tmp_path / "model.safetensors")) if k.startswith("lm_head")]
    torch.manual_seed(1)
    model = auto.from_config(config)
    load_checkpoint(model, str(tmp_path))
    assert model.lm_head.weight is model.get_input_embeddings().weight
    expected = saved.state_dict()
    assert all(torch.equal(tensor, expected[k]) for k, tensor in model.state_dict().items())


@pytest.fixture(scope="module")
def vl_checkpoint(tmp_path_factory):
    return _train_one_step(tmp_path_factory.mktemp("vl_full"), "qwen2_vl", "vlm_demo")


def _edited_copy(checkpoint, tmp_path, weights_file, edit):
    folder = tmp_path / "edited" / checkpoint.name
    shutil.copytree(checkpoint, folder)
    state = load_file(str(folder / weights_file))
    edit(state)
    save_file(state, str(folder / weights_file), metadata={"format": "pt"})
    return folder


def test_resume_refuses_a_checkpoint_with_an_unexpected_key(vl_checkpoint, tmp_path):
    def add(state):
        state["model.layers.7.mlp.up_proj.weight"] = state["model.layers.0.mlp.up_proj.weight"].clone()

    folder = _edited_copy(vl_checkpoint, tmp_path, "model.safetensors", add)
    with pytest.raises(CheckpointMismatchError) as err:
        _resume_one_step(tmp_path, "qwen2_vl", "vlm_demo", checkpoint=folder)
    assert str(folder) in str(err.value) and "model.language_model.layers.7.mlp.up_proj.weight" in str(err.value)
    assert not (tmp_path / "out" / "checkpoint-2").exists()  # refused before any step


def test_resume_refuses_a_checkpoint_missing_a_key(vl_checkpoint, tmp_path):
    def drop(state):
        vision = sorted(k for k in state if k.startswith("visual."))
        assert vision, sorted(state)[:5]
        del state[vision[0]]

    folder = _edited_copy(vl_checkpoint, tmp_path, "model.safetensors", drop)
    with pytest.raises(CheckpointMismatchError) as err:
        _resume_one_step(tmp_path, "qwen2_vl", "vlm_demo", checkpoint=folder)
    assert str(folder) in str(err.value) and "model.visual." in str(err.value)


def test_resume_refuses_a_checkpoint_with_a_wrong_shape(vl_checkpoint, tmp_path):
    def widen(state):
        state["model.norm.weight"] = torch.ones(state["model.norm.weight"].numel() + 1)

    folder = _edited_copy(vl_checkpoint, tmp_path, "model.safetensors", widen)
    with pytest.raises(CheckpointMismatchError) as err:
        _resume_one_step(tmp_path, "qwen2_vl", "vlm_demo", checkpoint=folder)
    assert str(folder) in str(err.value) and "model.language_model.norm.weight" in str(err.value)


def test_resume_refuses_a_lora_checkpoint_with_an_unexpected_key(tmp_path):
    checkpoint = _train_one_step(tmp_path / "train", "qwen2_vl", "vlm_demo", **LORA)

    def add(state):
        (key,) = [k for k in state if k.endswith("layers.0.mlp.up_proj.lora_A.weight")]
        state[key.replace("layers.0.", "layers.7.")] = state[key].clone()

    folder = _edited_copy(checkpoint, tmp_path, "adapter_model.safetensors", add)
    with pytest.raises(CheckpointMismatchError) as err:
        _resume_one_step(tmp_path, "qwen2_vl", "vlm_demo", checkpoint=folder, **LORA)
    assert str(folder) in str(err.value) and "layers.7.mlp.up_proj.lora_A" in str(err.value)
    with pytest.raises(CheckpointMismatchError, match="holds a LoRA adapter"):  # a LoRA checkpoint in a full run
        _resume_one_step(tmp_path, "qwen2_vl", "vlm_demo", checkpoint=checkpoint)


def test_resume_refuses_a_full_checkpoint_in_a_lora_run(vl_checkpoint, tmp_path):
    with pytest.raises(CheckpointMismatchError, match="no LoRA adapter"):
        _resume_one_step(tmp_path, "qwen2_vl", "vlm_demo", checkpoint=vl_checkpoint, **LORA)


@pytest.mark.slow  # two 2-process DeepSpeed launches per case: ~45 s each on 2 idle cores
@pytest.mark.parametrize("zero,overrides,port", [("ds_z2_config", {}, 29641), ("ds_z3_config", {}, 29642),
                                                 ("ds_z3_config", LORA, 29643)], ids=["z2", "z3", "z3-lora"])
def test_two_process_deepspeed_resume_restores_every_tensor(tmp_path, zero, overrides, port):
    # DeepSpeed runs resume from DeepSpeed's own global_step*/ state (module keys, no conversion): the same check
    from transformers import AutoModelForImageTextToText

    from .test_deepspeed_cpu import REPO, launch, write_config

    common = dict(deepspeed=str(REPO / "configs" / "deepspeed" / f"{zero}.json"), save_steps=1, **overrides)
    first, out = write_config(tmp_path, "run", "qwen2_vl", "vlm_demo", max_steps=1, **common)
    launch(first, nproc=2, port=port, script="train_vlm_dopd.sh")
    saved = trainable_state(out / "checkpoint-1")
    if overrides:
        assert any(k.endswith("lora_B.weight") and saved[k].abs().max() > 0 for k in saved), "LoRA did not train"
    else:
        # ZeRO-3's consolidated save writes `model.model.layers.*` (transformers reverts its whole conversion table,
        # the legacy renamings too), which from_pretrained reads back: compare with the base in the model's layout
        trained, base = (AutoModelForImageTextToText.from_pretrained(str(path)).state_dict() for path in
                         (out / "checkpoint-1", resolve_model_path("tiny:qwen2_vl:student", "student")))
        assert trained.keys() == base.keys()
        assert any(".layers." in k and not torch.equal(trained[k], base[k]) for k in base)
    again, _ = write_config(tmp_path, "run", "qwen2_vl", "vlm_demo", max_steps=2, learning_rate=0.0,
                            resume_from_checkpoint="true", **common)
    launch(again, nproc=2, port=port, script="train_vlm_dopd.sh")
    (resumed,) = [r for r in read_log(out) if "loss" in r and r["step"] == 2]
    assert resumed["learning_rate"] == 0.0
    after = trainable_state(out / "checkpoint-2")
    assert after.keys() == saved.keys()
    differ = [k for k in saved if not torch.equal(after[k], saved[k])]
    assert not differ, f"{len(differ)} of {len(saved)} tensors differ from the checkpoint resumed from: {differ[:5]}"
