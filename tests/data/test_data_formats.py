"""Registry entries in every format -> canonical samples (and LLaMA-Factory's own entries, unchanged)."""

from __future__ import annotations

import os

import pytest
from data_testutils import SHAREGPT, make_image, vqa_row

from dopd.data import load_dataset_samples, load_datasets
from dopd.hparams import ConfigError, DataArguments


def test_llamafactory_mllm_demo_unchanged(lf_data_dir):
    args = DataArguments(dataset="mllm_demo", dataset_dir=str(lf_data_dir))
    samples = load_dataset_samples(args)
    assert len(samples) == 6
    first = samples[0]
    assert first.uid == "mllm_demo:0" and first.dataset == "mllm_demo" and first.index == 0
    assert first.source_file == str(lf_data_dir / "mllm_demo.json")
    assert first.messages == [
        {"role": "user", "content": "<image>Who are they?"},
        {"role": "assistant", "content": "They're Kane and Gretzka from Bayern Munich."},
        {"role": "user", "content": "What are they doing?<image>"},
    ]
    assert first.response == "They are celebrating on the soccer field."
    assert first.images == [str(lf_data_dir / "mllm_demo_data" / "1.jpg")] * 2
    assert all(os.path.isabs(p) and os.path.isfile(p) for s in samples for p in s.images)
    assert first.privileged.is_empty()


def test_llamafactory_identity_alpaca(lf_data_dir):
    samples = load_dataset_samples(DataArguments(dataset="identity", dataset_dir=str(lf_data_dir)))
    assert len(samples) == 91
    assert samples[0].messages == [{"role": "user", "content": "hi"}]
    assert samples[0].response.startswith("Hello! I am {{name}}, an AI assistant developed by {{author}}.")
    assert samples[0].images == []


def test_alpaca_system_input_history(registry):
    registry.add("a", [{
        "instruction": "Add them.", "input": "2 and 3", "output": "Answer: 5", "system": "Be brief.",
        "history": [["Hi", "Hello!"]], "privileged": "Use addition.",
    }], {"columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
                     "history": "history", "privileged": "privileged"}})
    (s,) = load_dataset_samples(registry.args("a"))
    assert s.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Add them.\n2 and 3"},
    ]
    assert s.response == "Answer: 5"
    assert s.privileged.hint == "Use addition."


def test_sharegpt_default_tags_and_prompt_only(registry):
    registry.add("s", [{"conversations": [
        {"from": "system", "value": "sys"}, {"from": "human", "value": "q1"}, {"from": "gpt", "value": "a1"},
        {"from": "human", "value": "q2"},
    ]}], {"formatting": "sharegpt"})
    (s,) = load_dataset_samples(registry.args("s"))
    assert [m["role"] for m in s.messages] == ["system", "user", "assistant", "user"]
    assert s.messages[-1]["content"] == "q2"
    assert s.response is None  # a prompt without a reference answer


def test_openai_content_parts_and_media_dir(registry, tmp_path):
    make_image(tmp_path / "media" / "x.png", (20, 10))
    registry.add("o", [{"messages": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "Look: "},
                                     {"type": "image_url", "image_url": {"url": "x.png"}},
                                     {"type": "text", "text": " what?"}]},
        {"role": "assistant", "content": "Answer: red"},
    ]}], {"formatting": "openai"})
    (s,) = load_dataset_samples(registry.args("o", media_dir=str(tmp_path / "media")))
    assert s.messages[1] == {"role": "user", "content": "Look: <image> what?"}
    assert s.images == [str(tmp_path / "media" / "x.png")]
    assert s.response == "Answer: red"


def test_csv_parquet_and_folder(registry, tmp_path):
    import pandas as pd

    rows = [{"instruction": f"q{i}", "output": f"a{i}", "privileged": f"hint {i}"} for i in range(3)]
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "t.parquet")
    (tmp_path / "folder").mkdir()
    for part in range(2):
        registry.add(f"part{part}", rows[part:part + 2], file_name=f"folder/{part}.jsonl")
    cols = {"columns": {"privileged": "privileged"}}
    registry.info.update({"c": {"file_name": "t.csv", **cols}, "p": {"file_name": "t.parquet", **cols},
                          "f": {"file_name": "folder", **cols}})
    registry.add("unused", [])
    for name, n in (("c", 3), ("p", 3), ("f", 4)):
        samples = load_dataset_samples(registry.args(name))
        assert len(samples) == n, name
        assert samples[1].messages == [{"role": "user", "content": "q1"}] and samples[1].response == "a1"
        assert samples[1].privileged.hint == "hint 1"
    folder = load_dataset_samples(registry.args("f"))
    assert [s.index for s in folder] == [0, 1, 2, 3]
    assert folder[2].source_file.endswith(os.path.join("folder", "1.jsonl"))


def test_privileged_object_in_csv_cell(registry, tmp_path):
    import pandas as pd

    pd.DataFrame([{"instruction": "q", "privileged": '{"hint": "h", "crops": [[0, 0, 2, 2]]}'}]).to_csv(
        tmp_path / "t.csv", index=False)
    registry.info["c"] = {"file_name": "t.csv", "columns": {"privileged": "privileged"}}
    registry.add("unused", [])
    (s,) = load_dataset_samples(registry.args("c"))
    assert s.privileged.hint == "h" and s.privileged.crops[0].bbox == (0.0, 0.0, 2.0, 2.0)


def test_privileged_shapes(registry):
    registry.add("v", [
        vqa_row(["a.png"], {"hint": "h", "boxes": [{"label": "cat", "bbox": [1, 2, 3, 4]},
                                                  {"label": "dog", "bbox": [1, 2, 3, 4.5], "image": 0}],
                            "crops": [[0, 0, 5, 5], {"bbox": [1, 1, 2, 2], "image": 0}]}),
        vqa_row(["a.png"], "just a hint"),
        vqa_row(["a.png"]),
    ], {**SHAREGPT, "privilege": "boxes_text,crops"})
    s0, s1, s2 = load_dataset_samples(registry.args("v"))
    assert [(b.label, b.bbox, b.image) for b in s0.privileged.boxes] == [
        ("cat", (1.0, 2.0, 3.0, 4.0), 0), ("dog", (1.0, 2.0, 3.0, 4.5), 0)]
    assert [(c.bbox, c.image) for c in s0.privileged.crops] == [((0, 0, 5, 5), 0), ((1, 1, 2, 2), 0)]
    assert s0.privilege == ["boxes_text", "crops"]
    assert s1.privileged.hint == "just a hint" and not s1.privileged.boxes
    assert s2.privileged.is_empty()


def test_num_samples_max_samples_and_mixing(registry):
    registry.add("a", [{"instruction": f"a{i}"} for i in range(4)])
    registry.add("b", [{"instruction": f"b{i}"} for i in range(2)])
    registry.info["a6"] = {"file_name": "a.json", "num_samples": 6}
    registry.add("unused", [])

    def prompts(**kw):
        return [s.messages[0]["content"] for s in load_dataset_samples(registry.args(**kw))]

    a6 = prompts(dataset="a6")
    assert len(a6) == 6 and set(a6) == {"a0", "a1", "a2", "a3"}  # every row once before any repeats
    assert a6 == prompts(dataset="a6")  # deterministic
    assert prompts(dataset="a", max_samples=2) == ["a0", "a1"]
    assert prompts(dataset="a,b") == ["a0", "a1", "a2", "a3", "b0", "b1"]
    assert prompts(dataset="a,b", mix_strategy="interleave_under") == ["a0", "b0", "a1", "b1", "a2"]
    assert prompts(dataset="a,b", mix_strategy="interleave_over") == ["a0", "b0", "a1", "b1", "a2", "b0", "a3"]
    probs = prompts(dataset="a,b", mix_strategy="interleave_over", interleave_probs="0.5,0.5")
    assert set(probs) == {"a0", "a1", "a2", "a3", "b0", "b1"}
    with pytest.raises(ConfigError, match="interleave_probs"):
        prompts(dataset="a,b", mix_strategy="interleave_under", interleave_probs="1")


def test_hub_entry_offline_is_a_clear_error(lf_data_dir):
    with pytest.raises(ConfigError, match=r"alpaca_en.*Hugging Face hub.*offline.*HF_HUB_OFFLINE=1"):
        load_dataset_samples(DataArguments(dataset="alpaca_en", dataset_dir=str(lf_data_dir)))


@pytest.mark.parametrize("entry, message", [
    ({"file_name": "x.json", "columns": {"privilegd": "p"}}, "unknown column key `privilegd`"),
    ({"file_name": "x.json", "formatting": "chatml"}, "unknown formatting `chatml`"),
    ({"file_name": "x.json", "privilege": ["hint", "arrows"]}, "unknown privilege processor `arrows`"),
    ({"file_name": "x.json", "ranking": True}, "preference"),
    ({"file_name": "x.json", "formatting": "sharegpt", "columns": {"videos": "videos"}}, "video"),
    ({"ms_hub_url": "x/y"}, "ms_hub_url"),
])
def test_bad_registry_entries(registry, entry, message):
    registry.add("x", [{"instruction": "q"}])
    registry.info["x"] = entry
    registry.add("unused", [])
    with pytest.raises(ConfigError, match=message):
        load_datasets(registry.args("x"))


def test_unknown_dataset_name_suggests(registry):
    registry.add("vlm_demo", [{"instruction": "q"}])
    with pytest.raises(ConfigError, match="did you mean: vlm_demo"):
        load_datasets(registry.args("vlm_dem"))


def test_privilege_override(registry):
    registry.add("a", [{"instruction": "q", "output": "a", "privileged": "h"}],
                 {"columns": {"privileged": "privileged"}})
    assert load_dataset_samples(registry.args("a"))[0].privilege == ["hint", "boxes_text", "crops"]
    assert load_dataset_samples(registry.args("a", privilege="reference"))[0].privilege == ["reference"]
    assert load_dataset_samples(registry.args("a", privilege="none"))[0].privilege == []
