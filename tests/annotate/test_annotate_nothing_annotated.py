"""`dopd-cli annotate` that annotated none of the samples exits non-zero and says why (it exited 0 before, leaving an
empty dataset and a registry entry for it)."""

from __future__ import annotations

import pytest
from annotate_testutils import SHAREGPT, FakeChatServer, Reply, vqa_rows, write_config, write_registry

from dopd.cli import main


def _annotate(tmp_path, server, capsys, **keys) -> tuple[int, str]:
    cfg = write_config(tmp_path / "a.yaml", dataset="vqa", dataset_dir=str(tmp_path), annotator_backend="openai",
                       annotator_model="fake", annotator_base_url=server.base_url, annotate_kind="boxes",
                       annotator_grounding="qwen3_vl", annotator_retry_backoff=0.01, annotator_timeout=5,
                       annotator_concurrency=1, **keys)
    with pytest.raises(SystemExit) as exit_info:
        main(["annotate", cfg])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out + captured.err


def test_no_sample_annotated_is_an_error_with_the_first_reason(tmp_path, capsys):
    write_registry(tmp_path, {"vqa": (vqa_rows(tmp_path, 3), SHAREGPT)})
    with FakeChatServer(lambda req: Reply("I cannot see any object."), max_requests=10) as server:
        code, text = _annotate(tmp_path, server, capsys)
    assert code == 1
    assert "annotated 0 of 3 samples" in text
    assert "unparseable" in text and "vqa:0" in text  # the first failure: its sample and reason


def test_a_rerun_with_everything_already_done_still_succeeds(tmp_path, capsys):
    write_registry(tmp_path, {"vqa": (vqa_rows(tmp_path, 2), SHAREGPT)})
    answer = '[{"bbox_2d": [0, 0, 500, 1000], "label": "red half"}]'
    with FakeChatServer(lambda req: Reply(answer), max_requests=10) as server:
        assert _annotate(tmp_path, server, capsys)[0] == 0
        assert _annotate(tmp_path, server, capsys)[0] == 0  # nothing to do: the output already holds 2 samples


def test_an_empty_dataset_is_an_error(tmp_path, capsys):
    write_registry(tmp_path, {"vqa": ([], SHAREGPT)})
    with FakeChatServer(lambda req: Reply("x"), max_requests=1) as server:
        code, text = _annotate(tmp_path, server, capsys)
    assert code == 1 and "dataset `vqa` has no samples" in text
