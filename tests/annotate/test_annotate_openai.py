"""`dopd-cli annotate` with the openai backend against a real chat-completions HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import threading

import pytest
from annotate_testutils import (
    SHAREGPT, FakeChatServer, Reply, math_rows, question_of, read_jsonl, vqa_rows, write_config, write_registry,
)

from dopd.annotate import run_annotate
from dopd.cli import main
from dopd.model.check_data import run_check_data_cli
from dopd.hparams import ConfigError

FAST = {"annotator_retry_backoff": 0.01, "annotator_timeout": 5, "annotator_concurrency": 3}


def _vqa(tmp_path, n=3):
    write_registry(tmp_path, {"vqa": (vqa_rows(tmp_path, n), SHAREGPT)})
    return tmp_path


def _run(tmp_path, server, **keys):
    cfg = {"dataset": "vqa", "dataset_dir": str(tmp_path), "annotator_backend": "openai", "annotator_model": "fake",
           "annotator_base_url": server.base_url, **FAST, **keys}
    return run_annotate(None, [f"{k}={v}" for k, v in cfg.items()])


@pytest.mark.parametrize("grounding,answer,expected", [
    # the left (red) half of the 333 x 217 image in each family's own convention
    ("qwen2_vl", "<|object_ref_start|>red half<|object_ref_end|><|box_start|>(0,0),(500,1000)<|box_end|>",
     [0.0, 0.0, 166.5, 217.0]),
    ("qwen3_vl", '```json\n[{"bbox_2d": [0, 0, 500, 1000], "label": "red half"}]\n```', [0.0, 0.0, 166.5, 217.0]),
    # Qwen2.5-VL: pixels of the image as the server received it (336 x 224): x = 168 * 333 / 336
    ("qwen2_5_vl", '[{"bbox_2d": [0, 0, {w2}, {h}], "label": "red half"}] The red half.', [0.0, 0.0, 166.5, 217.0]),
])
def test_boxes_per_family_end_to_end(tmp_path, grounding, answer, expected, capsys):
    _vqa(tmp_path)

    def reply(req):
        (image,) = req.images
        if grounding == "qwen2_5_vl":
            assert image.size == (336, 224)  # sent already resized: the coordinates' frame is known
            return Reply(answer.replace("{w2}", str(image.size[0] // 2)).replace("{h}", str(image.size[1])))
        assert image.size == (333, 217)  # relative conventions: the original image
        return Reply(answer)

    with FakeChatServer(reply, max_requests=10) as server:
        summary = _run(tmp_path, server, annotate_kind="boxes", annotator_grounding=grounding,
                       image_min_pixels=1024, image_max_pixels=589824)
    assert summary.counts["annotated"] == 3 and not summary.error
    if grounding == "qwen2_vl":
        assert all(r.body.get("skip_special_tokens") is False for r in server.received)
    out = tmp_path / "annotated"
    rows = read_jsonl(out / "vqa_boxes.jsonl")
    assert [r["extra"] for r in rows] == [0, 1, 2]  # every input field kept, input order
    for row in rows:
        assert row["privileged"]["boxes"] == [{"label": "red half", "bbox": expected, "image": 0}]
        assert row["privileged"]["crops"] == [{"bbox": [0, 0, 209, 217], "image": 0}]  # margin 0.25 of 166.5
        assert row["images"] == [str(tmp_path / "img" / "odd.png")]
    entry = json.loads((out / "dataset_info.json").read_text())["vqa_boxes"]
    assert entry["file_name"] == "vqa_boxes.jsonl" and entry["columns"]["privileged"] == "privileged"
    assert entry["privilege"] == ["boxes_text", "crops"] and entry["formatting"] == "sharegpt"
    assert run_check_data_cli(None, ["dataset=vqa_boxes", f"dataset_dir={out}"]) == 0
    assert "3 ok, 0 invalid" in capsys.readouterr().out


def test_retries_timeouts_malformed_answers_and_the_summary(tmp_path):
    _vqa(tmp_path, 6)
    calls: dict[str, int] = {}
    lock = threading.Lock()

    def reply(req):
        q = question_of(req)
        with lock:
            calls[q] = calls.get(q, 0) + 1
            n = calls[q]
        good = '[{"bbox_2d": [10, 10, 500, 500], "label": "thing"}]'
        if "object 0" in q:
            return Reply(status=500) if n == 1 else Reply(good)  # a 500, then success
        if "object 1" in q:
            return Reply(good, delay=2.0)  # always slower than the timeout
        if "object 2" in q:
            return Reply("I am not sure what you mean.")  # malformed output: no box
        if "object 3" in q:
            return Reply(raw=b"<html>bad gateway</html>")  # not a chat-completions body
        if "object 4" in q:
            return Reply('[{"bbox_2d": [1200, 10, 1500, 20], "label": "outside"}]')  # no box survives
        return Reply(good)

    with FakeChatServer(reply, max_requests=40) as server:
        summary = _run(tmp_path, server, annotate_kind="boxes", annotator_grounding="qwen3_vl",
                       annotator_timeout=0.5, annotator_max_retries=1)
    d = summary.as_dict()
    assert (d["annotated"], d["unparseable"], d["failed_requests"], d["no_valid_box"]) == (2, 1, 2, 1)
    assert calls["What is left of object 0?"] == 2 and calls["What is left of object 1?"] == 2
    rejects = {r["uid"]: r for r in read_jsonl(tmp_path / "annotated" / "vqa_boxes.rejects.jsonl")}
    assert rejects["vqa:1"]["reason"] == "request_failed" and "timed out" in rejects["vqa:1"]["detail"]
    assert rejects["vqa:2"]["reason"] == "unparseable" and rejects["vqa:2"]["answer"].startswith("I am not")
    assert rejects["vqa:3"]["reason"] == "request_failed" and "malformed" in rejects["vqa:3"]["detail"]
    assert rejects["vqa:4"]["reason"] == "no_valid_box"
    saved = json.loads((tmp_path / "annotated" / "vqa_boxes.summary.json").read_text())
    assert saved["annotated"] == 2 and saved["failed_requests"] == 2

    # a rerun asks again only for the failed requests; the server now answers quickly
    with FakeChatServer(lambda req: Reply('[{"bbox_2d": [0, 0, 10, 10], "label": "late"}]'), max_requests=10) as s2:
        again = _run(tmp_path, s2, annotate_kind="boxes", annotator_grounding="qwen3_vl")
    assert sorted(question_of(r) for r in s2.received) == ["What is left of object 1?", "What is left of object 3?"]
    assert again.counts["annotated"] == 2 and again.skipped_done == 4
    rows = read_jsonl(tmp_path / "annotated" / "vqa_boxes.jsonl")
    assert [r["source_uid"] for r in rows] == ["vqa:0", "vqa:1", "vqa:3", "vqa:5"]


def test_hints_leak_check_asks_again_then_drops(tmp_path):
    write_registry(tmp_path, {"math": (math_rows(3), {"columns": {"prompt": "instruction", "response": "output"},
                                                     "privilege": ["hint"]})})
    asked: dict[str, int] = {}

    def reply(req):
        q = question_of(req)
        asked[q] = asked.get(q, 0) + 1
        assert "Reference answer" in req.text and not req.images
        if q.startswith("Problem 0"):
            return Reply("Add the two numbers.")  # clean at once
        if q.startswith("Problem 1"):  # leaks once, then clean
            assert ("previous hint was rejected" in req.text) == (asked[q] > 1)
            return Reply("It is 41." if asked[q] == 1 else "<think>so 41</think>\n\nCount up from 40 by one.")
        return Reply("The result is \\boxed{42}.")  # always leaks

    with FakeChatServer(reply, max_requests=20) as server:
        summary = _run(tmp_path, server, dataset="math", annotate_kind="hint", annotate_leak_retries=2)
    d = summary.as_dict()
    assert (d["annotated"], d["leaked"], d["asked_again"]) == (2, 1, 3)
    assert asked == {"Problem 0: what is 0 + 40?": 1, "Problem 1: what is 1 + 40?": 2, "Problem 2: what is 2 + 40?": 3}
    rows = read_jsonl(tmp_path / "annotated" / "math_hint.jsonl")
    assert [r["privileged"] for r in rows] == [{"hint": "Add the two numbers."}, {"hint": "Count up from 40 by one."}]
    assert rows[0]["meta"] == {"i": 0} and rows[0]["output"].endswith("\\boxed{40}")
    (reject,) = read_jsonl(tmp_path / "annotated" / "math_hint.rejects.jsonl")
    assert reject["reason"] == "leak" and "boxed" in reject["detail"]
    entry = json.loads((tmp_path / "annotated" / "dataset_info.json").read_text())["math_hint"]
    assert entry["privilege"] == ["hint"] and entry["columns"]["privileged"] == "privileged"


def test_api_key_comes_from_the_named_environment_variable(tmp_path, monkeypatch):
    write_registry(tmp_path, {"math": (math_rows(1), {"columns": {"prompt": "instruction", "response": "output"}})})
    with FakeChatServer(lambda req: Reply("Think of tens."), max_requests=5) as server:
        with pytest.raises(ConfigError, match="DOPD_TEST_ANNOTATE_KEY"):
            _run(tmp_path, server, dataset="math", annotator_api_key_env="DOPD_TEST_ANNOTATE_KEY")
        monkeypatch.setenv("DOPD_TEST_ANNOTATE_KEY", "sekrit")
        summary = _run(tmp_path, server, dataset="math", annotator_api_key_env="DOPD_TEST_ANNOTATE_KEY")
    assert summary.counts["annotated"] == 1
    assert server.received[0].headers["Authorization"] == "Bearer sekrit"
    assert server.received[0].body["model"] == "fake"


def test_dead_endpoint_is_a_clear_error(tmp_path, capsys):
    _vqa(tmp_path, 2)
    with FakeChatServer(lambda req: Reply("x")) as server:
        url = server.base_url
    cfg = write_config(tmp_path / "a.yaml", dataset="vqa", dataset_dir=str(tmp_path), annotator_backend="openai",
                       annotator_model="fake", annotator_base_url=url, annotate_kind="boxes",
                       annotator_grounding="qwen3_vl", annotator_retry_backoff=0.01)
    with pytest.raises(SystemExit) as exit_info:
        main(["annotate", cfg])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "not reachable" in err and url in err


def test_config_errors(tmp_path):
    _vqa(tmp_path, 1)
    base = [f"dataset_dir={tmp_path}", "annotator_backend=openai", "annotator_model=m"]
    with pytest.raises(ConfigError, match="annotator_grounding"):
        run_annotate(None, base + ["dataset=vqa", "annotate_kind=boxes"])
    with pytest.raises(ConfigError, match="annotate_kind"):
        run_annotate(None, base + ["dataset=vqa", "annotate_kind=captions"])
    with pytest.raises(ConfigError, match="did you mean: annotator_timeout"):
        run_annotate(None, base + ["dataset=vqa", "annotator_timeoutt=3"])
    with pytest.raises(ConfigError, match="exactly one"):
        run_annotate(None, base + ["dataset=vqa,vqa"])


def test_samples_check_data_would_refuse_get_no_request(tmp_path, capsys):
    rows = vqa_rows(tmp_path, 3)
    rows[1]["images"] = ["img/missing.png"]  # does not exist
    rows[2]["messages"][0]["content"] = "What is left?"  # an image but no <image> placeholder
    rows.append({"messages": [{"role": "user", "content": "no image here"}]})  # boxes need an image
    write_registry(tmp_path, {"vqa": (rows, SHAREGPT)})
    with FakeChatServer(lambda req: Reply('[{"bbox_2d": [0, 0, 10, 10], "label": "x"}]'), max_requests=5) as server:
        summary = _run(tmp_path, server, annotate_kind="boxes", annotator_grounding="qwen3_vl")
    assert len(server.received) == 1
    d = summary.as_dict()
    assert (d["annotated"], d["invalid_sample"], d["no_image"]) == (1, 2, 1)
    rejects = {r["uid"]: r for r in read_jsonl(tmp_path / "annotated" / "vqa_boxes.rejects.jsonl")}
    assert "file not found" in rejects["vqa:1"]["detail"] and "placeholder" in rejects["vqa:2"]["detail"]
    out = tmp_path / "annotated"
    assert run_check_data_cli(None, ["dataset=vqa_boxes", f"dataset_dir={out}"]) == 0
