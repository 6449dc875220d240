"""The incremental spool reader, against a fake cluster filesystem: no server, no SSH."""

from __future__ import annotations

import copy
import json
import math

import pytest

from apps.integrations.mlflow.base import MetricPoint
from apps.integrations.mlflow.filestore import bootstrap_files, new_state, parse_metric_line, read_increment

RUN = "/home/alice/jobs/42/mlruns/7/0123456789abcdef0123456789abcdef"


class FakeCluster:
    """A filesystem the job appends to and the hub reads through capped reads, counting calls."""

    def __init__(self, cap: int = 1 << 20, sizes: bool = True) -> None:
        self.files: dict[str, bytes] = {}
        self.cap = cap
        self.sizes = sizes
        self.reads = 0
        self.lists = 0

    def append(self, path: str, data: str) -> None:
        self.files[f"{RUN}/{path}"] = self.files.get(f"{RUN}/{path}", b"") + data.encode()

    def write(self, path: str, data: str) -> None:
        self.files[f"{RUN}/{path}"] = data.encode()

    def read(self, path: str, offset: int) -> tuple[bytes, int]:
        self.reads += 1
        data = self.files[path][offset : offset + self.cap]
        return data, offset + len(data)

    def list(self, directory: str) -> dict[str, int] | list[str]:
        self.lists += 1
        prefix = directory.rstrip("/") + "/"
        found = {p[len(prefix) :]: len(b) for p, b in self.files.items() if p.startswith(prefix)}
        return found if self.sizes else sorted(found)

    def poll(self, state: dict | None, final: bool = False):
        return read_increment(run_path=RUN, read=self.read, list_files=self.list, state=state, final=final)


def test_it_reads_points_params_and_tags_of_a_new_run():
    fs = FakeCluster()
    fs.append("metrics/loss", "1000 0.5 0\n1001 0.25 1\n")
    fs.write("params/lr", "0.01")
    fs.write("tags/stage", "probe")
    fs.write("tags/mlflow.runName", "axle-job")

    inc = fs.poll(None)

    assert inc.points == [MetricPoint("loss", 0.5, 1000, 0), MetricPoint("loss", 0.25, 1001, 1)]
    assert inc.params == {"lr": "0.01"}
    assert inc.tags == {"stage": "probe"}  # the run name is the hub's own


def test_it_returns_only_what_was_appended_since_the_last_poll():
    fs = FakeCluster()
    fs.append("metrics/loss", "1000 0.5 0\n")
    first = fs.poll(None)
    fs.append("metrics/loss", "1001 0.25 1\n")

    second = fs.poll(first.state)

    assert [p.step for p in second.points] == [1]
    assert second.params == {} and second.tags == {}


def test_it_leaves_a_half_written_line_for_next_time():
    fs = FakeCluster()
    fs.append("metrics/loss", "1000 0.5 0\n1001 0.2")
    first = fs.poll(None)
    assert [p.step for p in first.points] == [0]

    fs.append("metrics/loss", "5 1\n")
    second = fs.poll(first.state)

    assert second.points == [MetricPoint("loss", 0.25, 1001, 1)]


def test_it_does_not_read_a_file_whose_size_has_not_changed():
    fs = FakeCluster()
    fs.append("metrics/loss", "1000 0.5 0\n")
    fs.write("params/lr", "0.01")
    fs.write("tags/stage", "probe")
    state = fs.poll(None).state
    fs.reads = 0

    again = fs.poll(state)

    assert not again
    assert fs.reads == 0
    assert fs.lists == 2 * 3  # metrics, params, tags: one listing each per poll


def test_it_keeps_reading_until_a_capped_transport_has_sent_everything():
    fs = FakeCluster(cap=7)
    lines = "".join(f"{1000 + i} {i / 10} {i}\n" for i in range(50))
    fs.append("metrics/loss", lines)

    inc = fs.poll(None)

    assert [p.step for p in inc.points] == list(range(50))


def test_it_works_with_a_listing_that_has_no_sizes():
    fs = FakeCluster(sizes=False, cap=64)
    fs.append("metrics/loss", "".join(f"{1000 + i} {i} {i}\n" for i in range(20)))
    fs.write("params/lr", "0.01")
    first = fs.poll(None)
    fs.append("metrics/loss", "2000 99 20\n")

    second = fs.poll(first.state)

    assert len(first.points) == 20 and first.params == {"lr": "0.01"}
    assert [p.step for p in second.points] == [20]


def test_it_reads_metric_names_with_slashes_from_subfolders():
    fs = FakeCluster()
    fs.append("metrics/train/acc", "1000 0.9 3\n")

    inc = fs.poll(None)

    assert inc.points == [MetricPoint("train/acc", 0.9, 1000, 3)]


def test_it_reads_each_param_once():
    fs = FakeCluster()
    fs.write("params/lr", "0.01")
    first = fs.poll(None)
    fs.write("params/epochs", "3")

    second = fs.poll(first.state)

    assert second.params == {"epochs": "3"}


def test_it_reports_a_tag_again_when_the_job_changes_it():
    fs = FakeCluster()
    fs.write("tags/phase", "train")
    first = fs.poll(None)
    fs.write("tags/phase", "evaluate")

    second = fs.poll(first.state)

    assert second.tags == {"phase": "evaluate"}


def test_the_final_poll_catches_a_tag_overwritten_with_a_value_of_the_same_size():
    fs = FakeCluster()
    fs.write("tags/phase", "aaaa")
    first = fs.poll(None)
    fs.write("tags/phase", "bbbb")

    assert fs.poll(first.state).tags == {}
    assert fs.poll(first.state, final=True).tags == {"phase": "bbbb"}


def test_it_skips_a_malformed_line_and_says_so():
    fs = FakeCluster()
    fs.append("metrics/loss", "1000 0.5 0\ngarbage\n1002 0.1 2\n")

    inc = fs.poll(None)

    assert [p.step for p in inc.points] == [0, 2]
    assert inc.malformed == ["loss: garbage"]


def test_it_reads_nan_inf_and_the_other_line_formats_mlflow_writes():
    assert math.isnan(parse_metric_line("x", "1000 nan 1").value)
    assert parse_metric_line("x", "1000 -inf 1").value == -math.inf
    assert parse_metric_line("x", "1000 0.5") == MetricPoint("x", 0.5, 1000, 0)
    assert parse_metric_line("x", "1000 0.5 3 iris 1a2b3c") == MetricPoint("x", 0.5, 1000, 3)
    with pytest.raises(ValueError):
        parse_metric_line("x", "1000 0.5 3 4")


def test_it_leaves_the_given_state_alone_and_returns_state_that_survives_json():
    fs = FakeCluster()
    fs.append("metrics/loss", "1000 0.5 0\n")
    fs.write("params/lr", "0.01")
    fs.write("tags/phase", "train")
    state = fs.poll(None).state
    before = copy.deepcopy(state)
    fs.append("metrics/loss", "1001 0.4 1\n")

    after = fs.poll(json.loads(json.dumps(state)))

    assert state == before
    assert [p.step for p in after.points] == [1]
    assert json.loads(json.dumps(after.state)) == after.state


def test_an_empty_spool_yields_nothing():
    inc = FakeCluster().poll(new_state())
    assert not inc and inc.state == new_state()


def test_bootstrap_refuses_ids_that_would_leave_the_job_folder():
    with pytest.raises(ValueError):
        bootstrap_files("../../etc", "0123456789abcdef0123456789abcdef", "x", "/home/alice/mlruns")
    with pytest.raises(ValueError):
        bootstrap_files("7", "abc/../../x", "x", "/home/alice/mlruns")
    with pytest.raises(ValueError):
        bootstrap_files("7", "0123456789abcdef0123456789abcdef", "x", "relative/mlruns")


def test_bootstrap_points_the_run_artifacts_into_the_spool():
    files = bootstrap_files("7", "0123456789abcdef0123456789abcdef", "axle-job-42", "/home/alice/jobs/42/mlruns")

    assert set(files) == {
        "7/meta.yaml",
        "7/0123456789abcdef0123456789abcdef/meta.yaml",
        "7/0123456789abcdef0123456789abcdef/tags/mlflow.runName",
        "7/0123456789abcdef0123456789abcdef/metrics/",
        "7/0123456789abcdef0123456789abcdef/params/",
        "7/0123456789abcdef0123456789abcdef/artifacts/",
    }
    run_meta = files["7/0123456789abcdef0123456789abcdef/meta.yaml"].decode()
    assert "artifact_uri: file:///home/alice/jobs/42/mlruns/7/0123456789abcdef0123456789abcdef/artifacts" in run_meta
    assert "experiment_id: '7'" in run_meta
