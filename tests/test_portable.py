"""Code that runs on a cluster as it does on one machine: no window moves every row to a single
task, checkpoints are reliable and go where they are told, no private Spark API, and part
files are renamed through a file-system API, not the JVM."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from pyarrow import fs

from edgecache.pipeline.candidates import materialize, title_shares
from edgecache.pipeline.features import edge_popularity, in_window, title_features
from edgecache.pipeline.filesystems import remove_tree, stable_part_names
from edgecache.settings import Settings
from edgecache.pipeline.spark import drop_checkpoints
from tests.tiny import DAY, catalog_df, multi_df

ROOT = Path(__file__).resolve().parents[1]
CODE = [*sorted((ROOT / "include" / "edgecache").rglob("*.py")), *sorted((ROOT / "dags").rglob("*.py"))]


def _global_windows(plan: str) -> list[str]:
    """The window specs in a plan with no PARTITION BY: only ordering terms (or nothing)
    before the frame."""
    found = []
    for spec in re.findall(r"windowspecdefinition\((.*?)specifiedwindowframe", plan):
        terms = [t.strip() for t in spec.split(",") if t.strip()]
        if all(re.search(r" (ASC|DESC) NULLS (FIRST|LAST)$", t) for t in terms):
            found.append(spec or "()")
    return found


def _plan(df, capsys) -> str:  # noqa: ANN001
    capsys.readouterr()
    df.explain(mode="extended")
    return capsys.readouterr().out


def test_the_check_finds_a_global_window(spark, capsys):
    df = spark.range(10).selectExpr("id", "sum(id) OVER () AS s", "row_number() OVER (ORDER BY id) AS r",
                                    "sum(id) OVER (PARTITION BY id % 2) AS p")
    assert len(_global_windows(_plan(df, capsys))) >= 2  # OVER () and OVER (ORDER BY): one task each


def test_the_shares_use_no_global_window(spark, capsys):
    events = in_window(multi_df(spark), DAY, 3)
    popularity = edge_popularity(events, 2.0)
    titles = title_features(catalog_df(spark), DAY)
    assert _global_windows(_plan(popularity, capsys)) == []
    shares = title_shares(popularity, titles)
    for name, df in shares.items():
        assert _global_windows(_plan(df, capsys)) == [], name
    # and the service-wide total is still the sum over every edge and title
    total = sum(r["requests_decayed"] for r in popularity.collect())
    shares_sum = sum(r["global_share"] for r in shares["glob"].collect())
    assert shares_sum == pytest.approx(1.0) and total > 0


def test_no_sql_window_over_every_row_in_the_code():
    """A source-level net for the query text of every module: OVER () or OVER (ORDER BY ...)."""
    bad = [f"{p.relative_to(ROOT)}:{i}" for p in CODE for i, line in enumerate(p.read_text().splitlines(), 1)
           if re.search(r"OVER\s*\(\s*(\)|ORDER\s+BY)", line, re.I)]
    assert bad == []


def test_no_private_spark_api():
    """Spark Connect has no JVM behind the session: nothing may reach for it."""
    bad = [f"{p.relative_to(ROOT)}:{i}" for p in CODE for i, line in enumerate(p.read_text().splitlines(), 1)
           if re.search(r"\._(jvm|jsc|jdf|jsparkSession|jconf|gateway)\b", line)]
    assert bad == []


def test_checkpoints_are_reliable_and_go_to_the_checkpoint_dir(spark, tmp_path, capsys):
    sc = spark.sparkContext
    # the session's folder is the settings' (the test session is made by get_spark)
    assert sc.getConf().get("spark.checkpoint.dir") == Settings.from_env().spark_checkpoint_dir()
    before = sc.getCheckpointDir()
    try:
        sc.setCheckpointDir(str(tmp_path / "ckpt"))
        df = materialize(spark.range(100).selectExpr("id", "id * id AS sq"))
        files = [p for p in (tmp_path / "ckpt").rglob("*") if p.is_file()]
        assert files, "a reliable checkpoint writes files"
        # the lineage is cut: the plan reads the checkpoint, not the range
        plan = _plan(df, capsys)
        assert "ExistingRDD" in plan and "Range" not in plan and df.count() == 100
        assert df.agg({"sq": "sum"}).first()[0] == sum(i * i for i in range(100))
        drop_checkpoints(spark)
        assert not Path(sc.getCheckpointDir().removeprefix("file:")).exists()
    finally:
        if before:
            sc.setCheckpointDir(before.removeprefix("file:").rsplit("/", 1)[0])


def test_checkpoint_dir_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGECACHE_LOCAL_DIR", str(tmp_path))
    monkeypatch.delenv("EDGECACHE_CHECKPOINT_DIR", raising=False)
    assert Settings.from_env().spark_checkpoint_dir() == str(tmp_path / "spark-checkpoints")
    monkeypatch.setenv("EDGECACHE_CHECKPOINT_DIR", "hdfs://namenode:8020/edgecache/checkpoints")
    assert Settings.from_env().spark_checkpoint_dir() == "hdfs://namenode:8020/edgecache/checkpoints"


@pytest.mark.parametrize("as_uri", [False, True])
def test_part_files_get_stable_names(tmp_path, as_uri):
    for edge, names in {"edge=a": ["part-00001-9f3c-c000.txt", "part-00000-77aa-c000.txt"],
                        "edge=b": ["part-00000-0b1e-c000.txt"]}.items():
        (tmp_path / edge).mkdir()
        for n in names:
            (tmp_path / edge / n).write_text(n)
        (tmp_path / edge / f".{names[0]}.crc").write_text("")  # Spark's checksums keep their names
    stable_part_names(tmp_path.as_uri() if as_uri else str(tmp_path), ".jsonl")
    assert sorted(p.name for p in (tmp_path / "edge=a").iterdir() if not p.name.startswith(".")) == [
        "part-00000.jsonl", "part-00001.jsonl"]
    # the order of Spark's names is kept: part-00000-... became part-00000.jsonl
    assert (tmp_path / "edge=a" / "part-00000.jsonl").read_text() == "part-00000-77aa-c000.txt"
    assert [p.name for p in (tmp_path / "edge=b").iterdir() if not p.name.startswith(".")] == ["part-00000.jsonl"]
    stable_part_names(str(tmp_path), ".jsonl")  # again: nothing changes
    assert (tmp_path / "edge=a" / "part-00001.jsonl").read_text() == "part-00001-9f3c-c000.txt"
    remove_tree(str(tmp_path / "edge=b"))
    remove_tree(str(tmp_path / "edge=b"))  # gone already: nothing to do
    assert not (tmp_path / "edge=b").exists()


class CleanerRace:
    """A local file system on which another remover takes a file out of the folder while
    ``delete_dir`` walks it (as Spark's checkpoint cleaner can), ``races`` times."""

    def __init__(self, races: int) -> None:
        self.local, self.races = fs.LocalFileSystem(), races

    def get_file_info(self, path):
        return self.local.get_file_info(path)

    def delete_dir(self, path: str) -> None:
        if self.races:
            self.races -= 1
            shutil.rmtree(sorted(Path(path).iterdir())[0])
            raise FileNotFoundError(f"Cannot get information for path '{path}/rdd-1'")
        self.local.delete_dir(path)


def test_a_tree_another_remover_works_in_is_still_removed(tmp_path, monkeypatch):
    from edgecache.pipeline import filesystems

    for rdd in ("rdd-1", "rdd-2", "rdd-3"):
        (tmp_path / "checkpoints" / rdd).mkdir(parents=True)
        (tmp_path / "checkpoints" / rdd / "part-00000").write_text(rdd)
    folder = str(tmp_path / "checkpoints")
    monkeypatch.setattr(filesystems, "resolve", lambda uri: (CleanerRace(races=2), uri))
    remove_tree(folder)
    assert not (tmp_path / "checkpoints").exists()
    # a folder that keeps vanishing under the walk is an error in the end, not a loop
    (tmp_path / "checkpoints" / "rdd-4").mkdir(parents=True)
    (tmp_path / "checkpoints" / "rdd-5").mkdir()
    monkeypatch.setattr(filesystems, "resolve", lambda uri: (CleanerRace(races=9), uri))
    with pytest.raises(FileNotFoundError):
        remove_tree(folder, attempts=2)


def test_the_evaluation_reads_its_inputs_through_spark(spark, tmp_path, monkeypatch):
    """The day's logs and Spark's outputs reach the evaluation through spark.read (any file
    system Spark reaches), never a local Parquet reader."""
    import pyarrow.parquet as pq

    from edgecache.evaluation.evaluate import read_parquet, validated_events
    from edgecache.layout import Layout

    layout = Layout(tmp_path)
    day = layout.logs("2025-04-13") / "edge=e1"
    day.mkdir(parents=True)
    good = ['{"user_id": "U1", "device": "TV", "content_id": "C1", "duration": 30, '
            '"timestamp": "2025-04-13 08:00:00", "edge_id": "e1"}',
            '{"user_id": "U2", "device": "TV", "content_id": "C2", "duration": 40, '
            '"timestamp": "2025-04-13 09:00:00", "edge_id": "e1"}']
    (day / "part-00000.jsonl").write_text("\n".join([*good, good[0], "not json"]) + "\n")
    spark.createDataFrame([("e1", "C1", 3)], "edge_id string, content_id string, n int").write.parquet(
        str(tmp_path / "out"))

    def no_local_reader(*args, **kwargs):  # noqa: ANN002, ANN003
        raise AssertionError("read through a local Parquet reader")

    monkeypatch.setattr(pq, "read_table", no_local_reader)
    monkeypatch.setattr(pq, "ParquetFile", no_local_reader)
    events, counts = validated_events(spark, layout, "2025-04-13")
    assert sorted(events["user_id"]) == ["U1", "U2"]
    assert (counts["lines_in"], counts["accepted"], counts["duplicates"], counts["quarantined"]) == (4, 2, 1, 1)
    table = read_parquet(spark, (tmp_path / "out").as_uri(), ["content_id", "n"])
    assert table.to_pylist() == [{"content_id": "C1", "n": 3}]


def test_jobs_side_by_side_keep_their_order_and_raise_after_all_end(spark):
    from edgecache.pipeline.spark import in_parallel

    done = []

    def job(n: int) -> int:
        if n == 2:
            raise ValueError("day 2 is bad")
        total = spark.range(n * 1000).selectExpr("sum(id) AS s").first()["s"]
        done.append(n)
        return total

    assert in_parallel(job, [3, 1, 4]) == [sum(range(3000)), sum(range(1000)), sum(range(4000))]
    done.clear()
    with pytest.raises(ValueError, match="day 2"):
        in_parallel(job, [1, 2, 3, 4, 5])
    assert sorted(done) == [1, 3, 4, 5]  # the others ran to their end
