"""Nothing lost: an interrupted run keeps what it finished, a rerun does only the rest (torn last line repaired)."""

from __future__ import annotations

import json

import pytest
from annotate_testutils import FakeChatServer, Reply, math_rows, question_of, read_jsonl, write_config, write_registry

import dopd.annotate.workflow as workflow
from dopd.cli import main


def test_interrupted_run_resumes_where_it_stopped(tmp_path, monkeypatch, capsys):
    write_registry(tmp_path, {"math": (math_rows(8), {"columns": {"prompt": "instruction", "response": "output"}})})
    asked: list[str] = []

    def reply(req):
        asked.append(question_of(req))
        return Reply(f"Hint for {question_of(req).split(':')[0]}: add the numbers.")

    real_record = workflow._record
    calls = {"n": 0}

    def ctrl_c_on_the_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_record(*args, **kwargs)

    with FakeChatServer(reply, max_requests=30) as server:
        cfg = write_config(tmp_path / "a.yaml", dataset="math", dataset_dir=str(tmp_path),
                           annotator_backend="openai", annotator_model="fake", annotator_base_url=server.base_url,
                           annotator_concurrency=2, annotate_kind="hint")
        monkeypatch.setattr(workflow, "_record", ctrl_c_on_the_third)
        with pytest.raises(SystemExit) as exit_info:
            main(["annotate", cfg])
        assert exit_info.value.code == 130
        assert "interrupted: rerun" in capsys.readouterr().out
        data = tmp_path / "annotated" / "math_hint.jsonl"
        first = [r["source_uid"] for r in read_jsonl(data)]
        assert len(first) == 2
        summary = json.loads((tmp_path / "annotated" / "math_hint.summary.json").read_text())
        assert summary["interrupted"] and summary["annotated"] == 2
        with data.open("a") as fh:
            fh.write('{"instruction": "torn by a kill -9 in the middle of a wri')  # no newline, not JSON

    # (requests in flight at the interrupt may still reach the first server: the rerun talks to a new one)
    monkeypatch.setattr(workflow, "_record", real_record)
    with FakeChatServer(reply, max_requests=30) as server:
        with pytest.raises(SystemExit) as exit_info:
            main(["annotate", cfg, f"annotator_base_url={server.base_url}"])
        assert exit_info.value.code == 0
        rerun = [question_of(r) for r in server.received]
    done_first = {f"Problem {uid.split(':')[1]}" for uid in first}
    assert not done_first & {q.split(":")[0] for q in rerun}  # finished samples are not asked again
    assert len(rerun) == 8 - 2
    rows = read_jsonl(data)  # the torn line is gone, every sample once, in input order
    assert [r["source_uid"] for r in rows] == [f"math:{i}" for i in range(8)]
    assert all(r["privileged"]["hint"].startswith(f"Hint for Problem {i}") for i, r in enumerate(rows))
    out = capsys.readouterr().out
    assert "2 already done" in out and "annotated 6" in out

    # a third run finds nothing to do and asks nothing
    with FakeChatServer(reply, max_requests=5) as server:
        main_args = ["annotate", cfg, f"annotator_base_url={server.base_url}"]
        with pytest.raises(SystemExit):
            main(main_args)
        assert server.received == []
    assert "8 already done" in capsys.readouterr().out
