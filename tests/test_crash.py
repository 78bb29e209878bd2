"""Crash safety: a job killed at any point leaves the previous good output or nothing, and a
re-run gives exactly what an uninterrupted run gives.

The Spark stages run as real ``spark-submit`` subprocesses. Each is SIGKILLed, with its whole
process group (driver, JVM, Python workers), at the moment a polled condition on its output
folders first holds, then re-run to completion; the outputs are compared row for row with one
uninterrupted reference run, shared by the module. After every kill, whatever a reader would
trust (a committed folder) must already equal the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from edgecache.pipeline.features import FEATURE_TABLES
from edgecache.evaluation import evaluate
from edgecache.pipeline import features, predict
from edgecache.simulate import generate_logs as generate
from edgecache.simulate import next_day_logs
from edgecache.pipeline.job import InputError
from edgecache.layout import COMMIT_MARKER, Layout, committed, discard, staging, write_json_atomic
from tests.test_jobs import CACHE_GB, SMALL, table

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATE, NEXT = "2025-04-12", "2025-04-13"
GAP = "2025-04-10"  # a day inside D's feature window whose events go missing

ARGS = {
    "generate": SMALL + ["--history-days", "4"],
    "features": ["--window-days", "3"],
    "predict": ["--top-k", "5", "--cache-gb", str(CACHE_GB)],
    "next_day_logs": [],
    "evaluate": ["--workers", "1"],
}
SCRIPTS = {"generate": "generate_logs.py", "features": "features.py", "predict": "predict.py",
           "next_day_logs": "next_day_logs.py", "evaluate": "evaluate.py"}
MODULES = {"generate": generate, "features": features, "predict": predict, "next_day_logs": next_day_logs,
           "evaluate": evaluate}
STAGES = tuple(MODULES)

# Fields of a report that say what one run had to do (or how long it took), not what it made.
RUN_FIELDS = {"wall_seconds", "seconds", "history_days_generated", "reference_written", "days_validated",
              "previous_day_features_built", "logs_generated"}
LEFTOVER = re.compile(r"\.+.+\.(?:tmp|old)-\d+.*")

POLL_SECONDS = 0.01
KILL_TIMEOUT = 900  # generous: a loaded two-core machine starts a JVM slowly
RUN_TIMEOUT = 1200

# Each Spark test starts two or three JVMs: slow, so out of `make test-fast`.
spark_jobs = pytest.mark.e2e


# --- the commit helpers on their own ------------------------------------------------------


def test_staging_swaps_a_finished_folder_in_whole(tmp_path):
    day = tmp_path / "events" / "date=2025-04-12"
    with staging(day) as tmp:
        (tmp / "part-0").write_text("old")
    with staging(day) as tmp:
        (tmp / "part-0").write_text("new")
        # until the block ends, readers still see the old folder, committed
        assert (day / "part-0").read_text() == "old" and committed(day)
        assert not committed(tmp)
    assert (day / "part-0").read_text() == "new" and committed(day)
    assert sorted(p.name for p in day.parent.iterdir()) == ["date=2025-04-12"]


def test_a_failed_write_leaves_the_previous_folder(tmp_path):
    day = tmp_path / "date=2025-04-12"
    with staging(day) as tmp:
        (tmp / "part-0").write_text("good")
    with pytest.raises(RuntimeError), staging(day) as tmp:
        (tmp / "part-0").write_text("half")
        raise RuntimeError("killed")
    assert (day / "part-0").read_text() == "good" and committed(day)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["date=2025-04-12"]


def test_leftovers_of_dead_writers_go_and_those_of_live_ones_stay(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        day = tmp_path / "date=2025-04-12"
        for name in (f".date=2025-04-12.tmp-{dead.pid}", f".date=2025-04-12.old-{dead.pid}",
                     f"..date=2025-04-12.tmp-{dead.pid}.tmp", f".date=2025-04-12.tmp-{live.pid}",
                     f".date=2025-04-13.tmp-{dead.pid}"):
            (tmp_path / name).mkdir()
        with staging(day) as tmp:
            (tmp / "part-0").write_text("x")
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            f".date=2025-04-12.tmp-{live.pid}", f".date=2025-04-13.tmp-{dead.pid}", "date=2025-04-12"]
    finally:
        live.kill()
        live.wait()


def test_a_folder_without_its_marker_is_not_trusted(tmp_path):
    """Spark's own _SUCCESS marks one table, not a day: logs with it but without the commit
    marker (say, written by a generate that was killed) are not a day's logs."""
    layout = Layout(tmp_path)
    edge = layout.logs(DATE) / "edge=edge-01"
    edge.mkdir(parents=True)
    (edge / "part-00000.jsonl").write_text("{}\n")
    (layout.logs(DATE) / "_SUCCESS").touch()
    assert not layout.has_logs(DATE)
    with pytest.raises(InputError, match="incomplete"):
        features.check_day_logs(layout, DATE)
    (layout.logs(DATE) / COMMIT_MARKER).touch()
    assert layout.has_logs(DATE)
    discard(layout.logs(DATE))
    assert not layout.logs(DATE).exists()


def test_readers_require_the_commit(tmp_path):
    """Features and predictions left by a killed job are refused, even beside a manifest."""
    layout = Layout(tmp_path)
    layout.reference.mkdir()
    (layout.catalog).touch()
    day = layout.features_day(DATE)
    (day / "user_titles" / "_temporary").mkdir(parents=True)  # a table being rewritten
    write_json_atomic(day / "manifest.json", features.manifest(DATE, features_args(), [DATE]))
    assert not features.features_ready(layout, DATE, features_args())
    argv = ["--date", DATE, "--data-dir", str(tmp_path)]
    with pytest.raises(InputError, match="run features first"):
        predict.check(predict.build_parser().parse_args(argv))
    (day / COMMIT_MARKER).touch()
    assert features.features_ready(layout, DATE, features_args())
    predict.check(predict.build_parser().parse_args(argv))

    for name in ("users", "edge_demand"):
        layout.predictions(DATE, name).mkdir(parents=True)
    with pytest.raises(InputError, match="incomplete"):
        evaluate.check(evaluate.build_parser().parse_args(argv))
    (layout.predictions_day(DATE) / COMMIT_MARKER).touch()
    evaluate.check(evaluate.build_parser().parse_args(argv))


# --- comparing data directories -------------------------------------------------------------


def without_run_fields(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_run_fields(v) for k, v in value.items() if k not in RUN_FIELDS}
    if isinstance(value, list):
        return [without_run_fields(v) for v in value]
    return value


def outputs(root: Path, under: str = "", copied_from: Path | None = None) -> dict[str, Any]:
    """Every output below ``root / under``, by relative path, in a form that compares across
    runs: a Spark table's sorted rows (its part files are named at random), a folder of text
    part files' sorted lines, JSON without run fields. The data directory's path is masked,
    and that of ``copied_from``, where files of a copied directory were written. Hidden
    entries (Hadoop's .crc files, temporary folders) are left out."""
    found: dict[str, Any] = {}
    for path in sorted((root / under).rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_dir():
            parts = sorted(p for p in path.glob("part-*") if p.is_file())
            if parts and parts[0].suffix == ".parquet":
                found[str(rel)] = table(path)
            elif parts:
                found[str(rel)] = sorted(line for p in parts for line in p.read_text().splitlines())
        elif path.name.startswith("part-"):
            continue  # compared with its folder
        elif path.suffix == ".json":
            found[str(rel)] = without_run_fields(json.loads(path.read_text()))
        elif path.suffix == ".parquet":
            found[str(rel)] = table(path)
        elif path.suffix in (".csv", ".md", ".jsonl"):
            found[str(rel)] = path.read_text()
        else:  # markers, and the plot (drawn from report.json, compared above)
            found[str(rel)] = "present"
    text = json.dumps(found, sort_keys=True, default=str)
    for prefix in {str(root.resolve()), str(root), str(copied_from or root)}:
        text = text.replace(prefix, "<data>")
    return json.loads(text)


def assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert sorted(got) == sorted(want), "the outputs differ in which files exist"
    for key in want:
        assert got[key] == want[key], f"{key} differs from the uninterrupted run's"


def leftovers(root: Path) -> list[str]:
    """Temporary folders of killed runs still there, and anything left in .staging."""
    found = [p for p in root.rglob("*") if LEFTOVER.fullmatch(p.name)]
    staging_dir = root / ".staging"
    found += list(staging_dir.iterdir()) if staging_dir.is_dir() else []
    return sorted(str(p.relative_to(root)) for p in found)


def assert_trusted_outputs_are_good(work: Path, reference: dict[str, Path], stage: str) -> None:
    """What a reader trusts after a kill (each committed folder, the evaluation) already
    equals the uninterrupted run's: a kill leaves the old output or none, never a half."""
    trusted = [m.parent for m in work.rglob(COMMIT_MARKER)
               if not any(part.startswith(".") for part in m.relative_to(work).parts)]
    trusted += [p for p in (work / "evaluation").glob("date=*")]
    for folder in trusted:
        rel = str(folder.relative_to(work))
        assert_same(actual(work, reference, rel), expected(reference, stage, rel))


# --- running and killing the real jobs -----------------------------------------------------


def command(stage: str, root: Path) -> list[str]:
    # The reference ran in this process's SparkSession (local[2], two shuffle partitions):
    # the subprocesses get the same, so that even sums of floats add up in the same order.
    return [str(BIN / "spark-submit"), "--master", "local[2]", "--conf", "spark.sql.shuffle.partitions=2",
            "--conf", "spark.ui.enabled=false", str(ROOT / "spark_jobs" / SCRIPTS[stage]),
            "--date", DATE, "--data-dir", str(root), *ARGS[stage]]


def environment() -> dict[str, str]:
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    env.pop("PYSPARK_SUBMIT_ARGS", None)
    return env


def group_alive(pgid: int) -> bool:
    """True while a process of the group, not yet a zombie, is left (Linux's /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError):
            continue
        if int(group) == pgid and state != "Z":
            return True
    return False


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    while group_alive(proc.pid):  # the JVM too, before anyone touches its files again
        assert time.monotonic() < deadline, "the killed job's processes did not go away"
        time.sleep(0.1)


def log_tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def kill_when(stage: str, root: Path, condition: Callable[[], bool], what: str) -> None:
    """Start ``stage`` on ``root`` and SIGKILL it as soon as ``condition()`` holds."""
    log = root.parent / f"{stage}-killed-{time.monotonic_ns()}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(command(stage, root), env=environment(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + KILL_TIMEOUT
        while not condition():
            if proc.poll() is not None:
                pytest.fail(f"{stage} ended (exit {proc.returncode}) before {what}:\n{log_tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"{stage}: no {what} within {KILL_TIMEOUT} s:\n{log_tail(log)}")
            time.sleep(POLL_SECONDS)
    finally:
        kill_group(proc)


def run_to_end(stage: str, root: Path) -> None:
    log = root.parent / f"{stage}-{time.monotonic_ns()}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(command(stage, root), env=environment(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        code = proc.wait(timeout=RUN_TIMEOUT)
    finally:
        kill_group(proc)
    assert code == 0, f"{stage} failed after the kill:\n{log_tail(log)}"


def exists(root: Path, pattern: str) -> Callable[[], bool]:
    """A kill point: something matching ``pattern`` (a glob under ``root``) exists."""

    def holds() -> bool:
        try:
            return next(root.glob(pattern), None) is not None
        except FileNotFoundError:  # a folder the glob was listing was just renamed
            return False

    return holds


# --- the uninterrupted reference run ------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory, spark) -> dict[str, Path]:
    """The data directory after each stage of one uninterrupted run (in this process)."""
    base = tmp_path_factory.mktemp("reference")
    root = base / "data"
    after = {}
    for stage in STAGES:
        assert MODULES[stage].main(["--date", DATE, "--data-dir", str(root), "--master", "local[2]",
                                    *ARGS[stage]]) == 0
        after[stage] = base / f"after-{stage}"
        shutil.copytree(root, after[stage])
    assert leftovers(root) == []
    return after


def expected(reference: dict[str, Path], stage: str, under: str = "") -> dict[str, Any]:
    """The reference's outputs after ``stage`` (below ``under``)."""
    return outputs(reference[stage], under, copied_from=reference[stage].parent / "data")


def actual(work: Path, reference: dict[str, Path], under: str = "") -> dict[str, Any]:
    """The outputs of a data directory that started as a copy of the reference's."""
    return outputs(work, under, copied_from=reference["generate"].parent / "data")


def start_from(reference: dict[str, Path], stage: str | None, tmp_path: Path) -> Path:
    """A copy of the data directory as the reference left it after ``stage`` (None: empty)."""
    work = tmp_path / "data"
    if stage is None:
        work.mkdir()
    else:
        shutil.copytree(reference[stage], work)
    return work


def features_args() -> argparse.Namespace:
    return features.build_parser().parse_args(["--date", DATE, *ARGS["features"]])


# --- the stages, killed -------------------------------------------------------------------


@spark_jobs
def test_generate_killed_during_the_history_and_during_the_day(reference, tmp_path):
    work = start_from(reference, None, tmp_path)
    # as soon as the second day of history is in place, and part-way through writing day D
    kill_when("generate", work, exists(work, f"logs/date={GAP}"), f"logs of {GAP}")
    assert_trusted_outputs_are_good(work, reference, "generate")
    kill_when("generate", work, exists(work, f"logs/.date={DATE}.tmp-*/_temporary"), f"a write of {DATE}'s logs")
    assert_trusted_outputs_are_good(work, reference, "generate")
    assert not Layout(work).has_logs(DATE)
    run_to_end("generate", work)
    assert_same(actual(work, reference), expected(reference, "generate"))
    assert leftovers(work) == []


@spark_jobs
def test_a_backfill_killed_when_its_folder_appears_is_validated_again(reference, tmp_path):
    """The day's events folder appearing must not mean the day was validated: before every
    stage committed its folders, this run lost the day's events and no report said so."""
    work = start_from(reference, "features", tmp_path)
    shutil.rmtree(Layout(work).events(GAP))
    kill_when("features", work, exists(work, f"events/date={GAP}"), f"events/date={GAP}")
    assert_trusted_outputs_are_good(work, reference, "features")
    run_to_end("features", work)
    want = pq.read_table(Layout(reference["features"]).events(GAP)).num_rows
    assert want > 0 and pq.read_table(Layout(work).events(GAP)).num_rows == want
    assert_same(actual(work, reference), expected(reference, "features"))
    assert leftovers(work) == []


@spark_jobs
def test_a_feature_rewrite_killed_part_way_keeps_the_previous_features(reference, tmp_path):
    """Killed while user_titles is being rewritten: the day's features are either not ready
    or exactly the previous ones, never an empty table under an old manifest."""
    work = start_from(reference, "features", tmp_path)
    kill_when("features", work, exists(work, f"features/*date={DATE}*/user_titles/_temporary"),
              "a write of user_titles")
    layout, ref = Layout(work), Layout(reference["features"])
    assert features.features_ready(layout, DATE, features_args())
    for name in FEATURE_TABLES:
        assert table(layout.features(DATE, name)) == table(ref.features(DATE, name)), name
    assert_trusted_outputs_are_good(work, reference, "features")
    run_to_end("features", work)
    assert_same(actual(work, reference), expected(reference, "features"))
    assert leftovers(work) == []


@spark_jobs
def test_a_first_feature_build_killed_during_a_backfill_and_before_the_previous_day(reference, tmp_path):
    """From logs only: killed part-way through validating an earlier day, then once D's
    features are in place but before D-1's (the training day's) are."""
    work = start_from(reference, "generate", tmp_path)
    kill_when("features", work, exists(work, f"events/.date={GAP}.tmp-*/_temporary"), f"a write of {GAP}'s events")
    assert not committed(Layout(work).events(GAP))
    assert_trusted_outputs_are_good(work, reference, "features")
    kill_when("features", work, exists(work, f"features/date={DATE}"), f"features/date={DATE}")
    assert features.features_ready(Layout(work), DATE, features_args())
    assert_trusted_outputs_are_good(work, reference, "features")
    run_to_end("features", work)
    assert_same(actual(work, reference), expected(reference, "features"))
    assert leftovers(work) == []


@spark_jobs
def test_predict_killed_while_writing_keeps_the_previous_predictions(reference, tmp_path):
    work = start_from(reference, "predict", tmp_path)
    kill_when("predict", work, exists(work, f"predictions/.date={DATE}.tmp-*/*/_temporary"),
              "a write of the predictions")
    assert committed(Layout(work).predictions_day(DATE))
    assert_trusted_outputs_are_good(work, reference, "predict")
    run_to_end("predict", work)
    assert_same(actual(work, reference), expected(reference, "predict"))
    assert leftovers(work) == []


@spark_jobs
def test_the_next_day_s_logs_and_the_evaluation_killed_while_writing(reference, tmp_path):
    work = start_from(reference, "predict", tmp_path)
    kill_when("next_day_logs", work, exists(work, f"logs/.date={NEXT}.tmp-*/_temporary"), f"a write of {NEXT}'s logs")
    assert not Layout(work).has_logs(NEXT) and not Layout(work).evaluation(DATE).exists()
    assert_trusted_outputs_are_good(work, reference, "next_day_logs")
    run_to_end("next_day_logs", work)
    assert_same(actual(work, reference), expected(reference, "next_day_logs"))
    kill_when("evaluate", work, exists(work, f"evaluation/.date={DATE}.tmp-*"), "the evaluation's outputs")
    assert not Layout(work).evaluation(DATE).exists()
    assert_trusted_outputs_are_good(work, reference, "evaluate")
    run_to_end("evaluate", work)
    assert_same(actual(work, reference), expected(reference, "evaluate"))
    assert leftovers(work) == []
