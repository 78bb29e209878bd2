"""Cache policies: hand-worked traces, and libCacheSim cross-checked against plain references."""

from __future__ import annotations

import tempfile
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgecache.evaluation.policies import (
    ADMISSION_BOOST,
    ADMISSION_TAU,
    LEAD_ORDER,
    ORACLE_DTYPE,
    POLICIES,
    Hits,
    Job,
    Ranking,
    Sequels,
    Trace,
    fit_prefix,
    hit_ratios,
    hit_ratios_many,
    next_access,
    oracle_ranking,
    plan,
    run_step,
    s3fifo_small_ratio,
    static_hits,
)

ONLINE = [name for name, p in POLICIES.items() if p.online]


def trace_of(letters: str, sizes: dict[str, int] | None = None) -> Trace:
    """A trace from one letter per request: A is object 1, B object 2, ..."""
    ids = np.array([ord(c) - 64 for c in letters], dtype=np.uint64)
    size = np.array([(sizes or {}).get(c, 1) for c in letters], dtype=np.int64)
    return Trace(ids, size, np.arange(len(ids), dtype=np.int64))


def ranking_of(letters: str, sizes: dict[str, int] | None = None) -> Ranking:
    return Ranking(np.array([ord(c) - 64 for c in letters], dtype=np.uint64),
                   np.array([(sizes or {}).get(c, 1) for c in letters], dtype=np.int64))


def zipf_trace(seed: int, n: int = 4000, objects: int = 80, sized: bool = False) -> Trace:
    rng = np.random.default_rng(seed)
    ids = (rng.zipf(1.2, n) % objects + 1).astype(np.uint64)
    size = (ids * 7919 % 13 + 1).astype(np.int64) if sized else np.ones(n, dtype=np.int64)
    return Trace(ids, size, np.arange(n, dtype=np.int64) // 10)


# --- plain references, one request at a time -------------------------------------------


def reference_lru(ids: list[int], sizes: list[int], capacity: int) -> list[bool]:
    """LRU in bytes: evict least recent until the object fits; an object larger than the cache is not kept."""
    cache: OrderedDict[int, int] = OrderedDict()
    used, out = 0, []
    for x, s in zip(ids, sizes):
        if x in cache:
            cache.move_to_end(x)
            out.append(True)
            continue
        out.append(False)
        if s > capacity:
            continue
        while used + s > capacity:
            _, freed = cache.popitem(last=False)
            used -= freed
        cache[x] = s
        used += s
    return out


def reference_belady(ids: list[int], capacity: int) -> list[bool]:
    """Belady's MIN for unit sizes: on a miss in a full cache, evict the object needed furthest ahead."""
    nxt = next_access(np.array(ids, dtype=np.uint64))
    never = len(ids) + 1
    cache: dict[int, int] = {}
    out = []
    for i, x in enumerate(ids):
        out.append(x in cache)
        if x not in cache and len(cache) >= capacity:
            del cache[max(cache, key=lambda k: cache[k])]
        cache[x] = int(nxt[i]) if nxt[i] >= 0 else never
    return out


# --- pure helpers ---------------------------------------------------------------------


def test_next_access_points_at_the_next_request_of_the_same_object():
    assert next_access(np.array([1, 2, 1, 3, 2, 1], dtype=np.uint64)).tolist() == [2, 4, 5, -1, -1, -1]


def test_fit_prefix_stops_at_the_first_title_that_does_not_fit():
    sizes = np.array([3, 2, 5, 1])
    assert [fit_prefix(sizes, c) for c in (0, 2, 3, 4, 5, 9, 10, 11)] == [0, 0, 1, 1, 2, 2, 3, 4]


def test_ranking_top_in_titles_and_in_bytes():
    r = ranking_of("ABCD", {"A": 3, "B": 2, "C": 5, "D": 1})
    assert r.top(2, unit_size=True).obj_id.tolist() == [1, 2]
    assert r.top(9, unit_size=False).obj_id.tolist() == [1, 2]  # C does not fit, D is not looked at
    assert r.top(10, unit_size=False).size.tolist() == [3, 2, 5]


def test_oracle_ranking_orders_by_requests_then_id():
    r = oracle_ranking(trace_of("CBABCAD", {"C": 4}))
    assert r.obj_id.tolist() == [1, 2, 3, 4]  # A, B, C twice each (tie: lower id), D once
    assert r.size.tolist() == [1, 1, 4, 1]


def test_static_hits_counts_objects_and_bytes():
    t = trace_of("ABCAB", {"A": 10, "B": 20, "C": 30})
    assert static_hits(t, np.array([1, 3], dtype=np.uint64)) == Hits(5, 3, 90, 50)
    assert static_hits(t.in_titles(), np.array([1, 3], dtype=np.uint64)) == Hits(5, 3, 5, 3)


def test_oracle_general_record_layout():
    assert ORACLE_DTYPE.itemsize == 24
    assert [ORACLE_DTYPE.fields[f][1] for f in ("timestamp", "obj_id", "size", "next_access")] == [0, 4, 12, 16]


def test_title_mode_reads_real_size_file_as_unit_sizes(tmp_path):
    sized = zipf_trace(3, sized=True)
    unit = Trace(sized.obj_id, np.ones(len(sized), dtype=np.int64), sized.timestamp)
    for name in ONLINE + ["Belady"]:
        assert hit_ratios(name, sized.in_titles(), 10) == hit_ratios(name, unit, 10), name


# --- hand-worked traces with exact hit counts ----------------------------------------


@pytest.mark.parametrize(
    ("name", "letters", "ranking", "hits"),
    [
        # A B C A B D A, 2 titles
        ("LRU", "ABCABDA", None, 0),  # every request comes back just after its eviction
        ("Belady", "ABCABDA", None, 2),  # keeps A: hits A at 3 and 6
        ("predictive", "ABCABDA", "AB", 5),  # A and B all day
        ("oracle", "ABCABDA", None, 5),  # A (3) and B (2) are the most requested
        # warm with A and B (scores 2 and 1): C and D, never predicted, are refused
        ("predictive+admission", "ABCABDA", "AB", 5),
        # A A B C A B, 2 titles: LFU keeps A (twice) and drops the once-seen B, then C
        ("LFU", "AABCAB", None, 2),
        ("LRU", "AABCAB", None, 1),
    ],
)
def test_hand_worked_hits_in_titles(name, letters, ranking, hits):
    got = hit_ratios(name, trace_of(letters).in_titles(), 2, ranking_of(ranking) if ranking else None)
    assert got == Hits(len(letters), hits, len(letters), hits)


# --- predictive+admission: hand-worked traces ------------------------------------------


def scored(letters: str, scores: list[float], sizes: dict[str, int] | None = None,
           sequels: dict[str, str] | None = None) -> Ranking:
    """A ranking with scores; ``sequels`` links an episode to the next (A -> B), over titles A-H."""
    r = ranking_of(letters, sizes)
    ids = np.arange(1, 9, dtype=np.uint64)
    nxt = np.zeros(8, dtype=np.uint64)
    for a, b in (sequels or {}).items():
        nxt[ord(a) - 65] = ord(b) - 64
    size = np.array([(sizes or {}).get(chr(64 + i), 1) for i in range(1, 9)], dtype=np.int64)
    return Ranking(r.obj_id, r.size, np.array(scores, dtype=np.float64), Sequels(ids, size, nxt))


def timed(letters: str, seconds: list[int], sizes: dict[str, int] | None = None) -> Trace:
    t = trace_of(letters, sizes)
    return Trace(t.obj_id, t.size, np.array(seconds, dtype=np.int64))


PRED, SLOW = ("pred",), ("slow",)  # one ranking decides every request


def admission(trace: Trace, capacity: int, ranking: Ranking, lead: tuple[str, ...] = LEAD_ORDER) -> Hits:
    """predictive+admission; ``lead`` names the rankings that may lead."""
    with tempfile.TemporaryDirectory() as tmp:
        step = plan("predictive+admission", trace.with_file(Path(tmp) / "t.oracleGeneral"), capacity, ranking)
        return run_step(replace(step, lead=lead))


def test_admission_admits_a_higher_score_and_refuses_a_lower_one():
    # pred's rule. Warm: A (5) and B (1). C (3) beats B and takes its place; B (1) then loses
    # to C and A.
    got = admission(trace_of("CBAC").in_titles(), 2, scored("ABC", [5, 1, 3]), PRED)
    assert got == Hits(4, 2, 4, 2)  # A and the second C
    # under pred, an unpredicted title (score 0) never displaces a predicted one
    assert admission(trace_of("DDDA").in_titles(), 1, scored("A", [0.5]), PRED).hits == 1


def test_admission_default_leads_with_the_slow_ranking_until_the_prediction_scores():
    # No ranking has scored yet at D's first request, so slow leads: D (asked for once)
    # outranks A, prefetched and never asked for. D then hits twice and A misses.
    assert admission(trace_of("DDDA").in_titles(), 1, scored("A", [0.5])).hits == 2
    # the same with the whole policy as the evaluation runs it
    assert hit_ratios("predictive+admission", trace_of("DDDA").in_titles(), 1, scored("A", [0.5])).hits == 2


def test_admission_good_predictions_lead_and_refuse_one_off_titles():
    # Warm: A (5), B (4). A and B are each among pred's top two when asked for, so pred
    # leads; C (unpredicted) is refused every time. A and B hit throughout.
    t = trace_of("ABCABCAB").in_titles()
    ranked = scored("AB", [5, 4])
    assert admission(t, 2, ranked).hits == 6
    # slow alone admits C on its first request (its count beats the unasked B) and then
    # keeps swapping: fewer hits
    assert admission(t, 2, ranked, SLOW).hits < 6


def test_admission_useless_predictions_lose_the_lead():
    # Warm: A (5), B (4), never asked for. C and D alternate: pred never has them in its
    # top two and scores nothing, slow knows them after one request each. The unasked
    # prefetched titles go first (B, the less predicted, then A): every request after the
    # first two hits.
    t = trace_of("CDCDCDCD").in_titles()
    ranked = scored("AB", [5, 4])
    assert admission(t, 2, ranked).hits == 6
    assert admission(t, 2, ranked, PRED).hits == 0  # pred alone refuses C and D for ever


def test_admission_values_decay_with_time_since_the_last_request():
    # pred's rule. One title: A (5) was last asked for at 0; B (2) at 1 h is still below A's decayed
    # value (2 > 5 e^-0.25 is false), at 5 h above it (5 e^-1.25 = 1.43 < 2), so B gets in;
    # then A at 5 h (5 > 2) takes the place back. Only the first A hits.
    hour = 3600
    assert ADMISSION_TAU == 4 * hour
    t = timed("ABBA", [0, hour, 5 * hour, 5 * hour + 1])
    assert admission(t.in_titles(), 1, scored("AB", [5, 2]), PRED).hits == 1
    # without the wait, A stays: A, then B refused twice, then A
    assert admission(timed("ABBA", [0, 1, 2, 3]).in_titles(), 1, scored("AB", [5, 2]), PRED).hits == 2


def test_admission_in_bytes_evicts_lowest_first_until_it_fits():
    sizes = {"A": 6, "B": 3, "C": 4}
    # 9 bytes hold A (score 1) and B (2). C (5, 4 bytes) evicts A (lowest, 6 bytes freed);
    # A then needs 6 bytes: B (2) is above A (1), so A is refused; B and C hit.
    got = admission(trace_of("CABC", sizes), 9, scored("BAC", [2, 1, 5], sizes))
    assert got == Hits(4, 2, 17, 7)
    # C (5) would have to evict B (2) and A (10): A is above C, so nothing is evicted.
    got = admission(trace_of("CBA", sizes), 9, scored("ABC", [10, 2, 5], sizes))
    assert got == Hits(3, 2, 13, 9)
    # a title larger than the cache is never admitted
    assert admission(trace_of("AA", {"A": 20}), 9, scored("A", [9], {"A": 20})).hits == 0


def test_admission_boosts_the_next_episode():
    # pred's rule. A -> B. Warm: C (30), D (5). A (unpredicted) is refused, but its next episode B gets
    # 0 + BOOST = 8 > 5 and replaces D: B and C hit.
    assert ADMISSION_BOOST == 8.0
    links = {"A": "B"}
    assert admission(trace_of("ABC").in_titles(), 2, scored("CD", [30, 5], sequels=links), PRED).hits == 2
    # Once asked for, B drops to its score (0): D (5) misses once and takes its place back.
    got = admission(trace_of("ABDDC").in_titles(), 2, scored("CD", [30, 5], sequels=links), PRED)
    assert got.hits == 3  # B, the second D, C
    # a boost below the lowest cached value (25) is refused: only C hits
    assert admission(trace_of("ABC").in_titles(), 2, scored("CD", [30, 25], sequels=links), PRED).hits == 1
    # a boost raises a cached next episode: B (5) is kept over E (6) that would have replaced it
    ranked = scored("CBE", [30, 5, 6], sequels=links)
    assert admission(trace_of("AEB").in_titles(), 2, ranked, PRED).hits == 1  # E refused (6 < 13), B hits
    assert admission(trace_of("EB").in_titles(), 2, ranked, PRED).hits == 0  # E replaces B, then B misses


def test_admission_ties_evict_the_lower_id_first():
    # pred's rule. Equal scores, all at t = 0: a title displaces an equal one only if it has the higher id.
    same = [0, 0, 0]
    # B (2) meets A (2) and C (2): A, the lower id, is evicted; A then loses to B; C hits.
    assert admission(timed("BAC", same).in_titles(), 2, scored("ACB", [2, 2, 2]), PRED).hits == 1
    # A (2) meets B and C: B has the higher id, so A is refused; B and C hit.
    assert admission(timed("ABC", same).in_titles(), 2, scored("BCA", [2, 2, 2]), PRED).hits == 2


def test_warm_up_requests_are_not_counted():
    t = zipf_trace(5)
    everything = oracle_ranking(t)
    got = hit_ratios("predictive+admission", t.in_titles(), len(everything.obj_id), everything)
    assert got == Hits(len(t), len(t), len(t), len(t))


def test_hand_worked_hits_in_bytes():
    sizes = {"A": 6, "B": 3, "C": 4}
    t = trace_of("ABCAB", sizes)
    # 9 bytes: A and B fit; C (4) evicts A, A (6) evicts B and C, B fits beside A.
    assert hit_ratios("LRU", t, 9) == Hits(5, 0, 22, 0)
    assert hit_ratios("predictive", t, 9, ranking_of("AB", sizes)) == Hits(5, 4, 22, 18)
    assert hit_ratios("predictive", t, 8, ranking_of("AB", sizes)) == Hits(5, 2, 22, 12)  # only A fits
    assert hit_ratios("oracle", t, 10, None) == Hits(5, 4, 22, 18)


# --- libCacheSim against the plain references, to the last request -----------------------


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("capacity", [1, 3, 10, 40])
def test_libcachesim_lru_and_belady_match_plain_references(seed, capacity):
    t = zipf_trace(seed)
    ids = t.obj_id.tolist()
    assert hit_ratios("LRU", t.in_titles(), capacity).hits == sum(reference_lru(ids, [1] * len(ids), capacity))
    assert hit_ratios("Belady", t.in_titles(), capacity).hits == sum(reference_belady(ids, capacity))


@pytest.mark.parametrize("capacity", [5, 13, 40, 200])
def test_libcachesim_lru_in_bytes_matches_plain_reference(capacity):
    t = zipf_trace(4, sized=True)
    want = reference_lru(t.obj_id.tolist(), t.size.tolist(), capacity)
    got = hit_ratios("LRU", t, capacity)
    assert got.hits == sum(want)
    assert got.bytes_hit == int(t.size[np.array(want)].sum())


def test_libcachesim_lru_matches_reference_on_prefixes():
    t = zipf_trace(8, n=600)
    want = np.cumsum(reference_lru(t.obj_id.tolist(), [1] * len(t), 7))
    for n in (1, 50, 199, 437, 600):
        prefix = Trace(t.obj_id[:n], t.size[:n], t.timestamp[:n])
        assert hit_ratios("LRU", prefix.in_titles(), 7).hits == want[n - 1]


# --- properties ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_belady_beats_every_online_policy(seed):
    t = zipf_trace(seed).in_titles()
    for capacity in (1, 2, 5, 10, 20, 40):
        best = hit_ratios("Belady", t, capacity).hits
        for name in ONLINE:
            got = hit_ratios(name, t, capacity)
            assert got is None or got.hits <= best, (name, capacity)


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_oracle_beats_any_predicted_set_of_the_same_size(seed):
    t = zipf_trace(seed).in_titles()
    rng = np.random.default_rng(seed)
    for capacity in (1, 3, 10, 30):
        guess = Ranking(rng.permutation(np.arange(1, 81, dtype=np.uint64)), np.ones(80, dtype=np.int64))
        assert hit_ratios("oracle", t, capacity).hits >= hit_ratios("predictive", t, capacity, guess).hits
        # and the oracle's own ranking, given as a prediction, scores exactly the oracle
        assert hit_ratios("predictive", t, capacity, oracle_ranking(t)) == hit_ratios("oracle", t, capacity)


def test_s3fifo_small_queue_grows_to_admit_the_largest_object():
    assert s3fifo_small_ratio(1, 40) == 0.1
    assert int(10 * s3fifo_small_ratio(1, 10)) == 2  # 10 % would be one title, which S3-FIFO never admits
    assert int(4 * s3fifo_small_ratio(1, 4)) == 2
    assert s3fifo_small_ratio(1, 3) is None  # two of three titles would leave no main queue worth the name
    assert int(1000 * s3fifo_small_ratio(300, 1000)) == 301
    assert s3fifo_small_ratio(600, 1000) is None
    assert hit_ratios("S3-FIFO", zipf_trace(1).in_titles(), 3) is None


def test_s3fifo_with_the_default_small_queue_admits_nothing_in_a_small_cache(tmp_path):
    import libcachesim as lcs

    t = zipf_trace(6).in_titles()
    path = tmp_path / "t.oracleGeneral"
    t.with_file(path)
    reader = lcs.TraceReader(str(path), lcs.TraceType.ORACLE_GENERAL_TRACE, lcs.ReaderInitParam(ignore_obj_size=True))
    # Why the small queue is resized: libCacheSim's S3-FIFO at 10 % of 10 titles never hits.
    assert lcs.S3FIFO(10, hashpower=8).process_trace(reader)[0] == 1.0
    assert hit_ratios("S3-FIFO", t, 10).hits > hit_ratios("LRU", t, 10).hits / 2


def test_many_in_worker_processes_equals_one_at_a_time(tmp_path):
    t = zipf_trace(9, sized=True).with_file(tmp_path / "t.oracleGeneral")
    rank = oracle_ranking(t)
    jobs = [Job(n, tr, c, rank) for n in POLICIES for tr, c in ((t.in_titles(), 8), (t, 60))]
    one = hit_ratios_many(jobs, workers=1)
    assert hit_ratios_many(jobs, workers=2) == one
    assert one == [hit_ratios(j.name, j.trace, j.capacity, j.ranking) for j in jobs]


def test_empty_trace_and_missing_ranking():
    empty = Trace(np.array([], dtype=np.uint64), np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    assert hit_ratios("LRU", empty, 5) == Hits(0, 0, 0, 0)
    with pytest.raises(ValueError, match="needs a ranking"):
        hit_ratios("predictive", zipf_trace(1), 5)


# --- predictive+admission against the classic policies ----------------------------------

CLASSICS = ("LRU", "LFU", "S3-FIFO", "SIEVE")
DAY = 1744502400  # 2025-04-13 00:00 UTC


def catalog_sizes(titles: int, rng: np.random.Generator) -> np.ndarray:
    return np.clip(rng.lognormal(np.log(60), 0.5, titles), 20, 160).astype(np.int64)  # minutes


def irm_day(seed: int, titles: int = 1000, n: int = 10000) -> tuple[Trace, np.ndarray, np.ndarray]:
    """Independent requests from a Zipf popularity (no temporal locality): the trace, each
    title's size and the day before's request counts (the same popularity)."""
    rng = np.random.default_rng(seed)
    size = catalog_sizes(titles, rng)
    p = (np.arange(1, titles + 1) ** -0.8)[rng.permutation(titles)]
    p /= p.sum()
    today = rng.choice(titles, size=n, p=p)
    yesterday = np.bincount(rng.choice(titles, size=n, p=p), minlength=titles).astype(np.float64)
    ids = (today + 1).astype(np.uint64)
    return Trace(ids, size[today], DAY + np.sort(rng.integers(0, 86400, n))), size, yesterday


def shot_noise_day(seed: int, titles: int = 2000, n: int = 10000) -> tuple[Trace, np.ndarray, np.ndarray]:
    """Titles born over three days, each one's demand decaying over hours from its birth:
    yesterday's counts say little about today."""
    rng = np.random.default_rng(seed)
    size = catalog_sizes(titles, rng)
    birth = rng.uniform(-2 * 86400, 86400, titles)
    life = np.clip(rng.lognormal(np.log(8 * 3600), 1.0, titles), 1800, 5 * 86400)
    volume = rng.pareto(1.2, titles) + 1
    counts = []
    for lo in (-86400.0, 0.0):  # yesterday, today
        a, b = np.clip(lo - birth, 0, None), np.clip(lo + 86400 - birth, 0, None)
        mass = volume * (np.exp(-a / life) - np.exp(-b / life))
        counts.append(rng.poisson(mass / mass.sum() * n))
    ids = np.repeat(np.arange(titles), counts[1])
    a, b = np.clip(-birth[ids], 0, None), np.clip(86400 - birth[ids], 0, None)
    ea, eb = np.exp(-a / life[ids]), np.exp(-b / life[ids])
    secs = np.clip(birth[ids] - life[ids] * np.log(ea - rng.random(len(ids)) * (ea - eb)), 0, 86399)
    order = np.argsort(secs, kind="stable")
    ids = ids[order]
    trace = Trace((ids + 1).astype(np.uint64), size[ids], DAY + secs[order].astype(np.int64))
    return trace, size, counts[0].astype(np.float64)


def prediction(kind: str, size: np.ndarray, yesterday: np.ndarray, seed: int) -> Ranking:
    """A ranking over the catalog (ids 1..n): yesterday's counts, or a useless one."""
    rng = np.random.default_rng(seed)
    n = len(size)
    total = float(yesterday.sum())
    if kind == "yesterday":
        pos = np.lexsort((np.arange(n), -yesterday))
        pos, score = pos[yesterday[pos] > 0], yesterday[pos[yesterday[pos] > 0]]
    elif kind == "random":
        pos, score = rng.permutation(n), np.sort(rng.exponential(total / n, n))[::-1]
    elif kind == "reversed":  # the rarest first, with the top title's score
        pos, score = np.lexsort((np.arange(n), yesterday)), np.sort(yesterday)[::-1]
    elif kind == "idorder":  # a degenerate model: the catalog in id order, confident scores
        pos, score = np.arange(n), np.sort(yesterday)[::-1]
    else:  # constant
        pos, score = rng.permutation(n), np.full(n, total / n)
    return Ranking((pos + 1).astype(np.uint64), size[pos], np.asarray(score, dtype=np.float64))


def margins_over_classics(trace: Trace, size: np.ndarray, ranking: Ranking, tmp_path: Path) -> list[float]:
    """predictive+admission's object hit ratio minus the best classic's, at 1, 2, 5, 10 and
    20 % of the catalog in titles and in bytes."""
    written = trace.with_file(tmp_path / "t.oracleGeneral")
    jobs = []
    for t, total in ((written.in_titles(), len(size)), (written, int(size.sum()))):
        for pct in (1, 2, 5, 10, 20):
            cap = max(1, total * pct // 100)
            jobs += [Job(name, t, cap, ranking, int(size.max())) for name in CLASSICS + ("predictive+admission",)]
    hits = hit_ratios_many(jobs)
    out = []
    for i in range(0, len(hits), len(CLASSICS) + 1):
        *classic, ours = hits[i:i + len(CLASSICS) + 1]
        out.append(ours.object_hit_ratio - max(h.object_hit_ratio for h in classic if h is not None))
    return out


@pytest.mark.parametrize("kind", ["random", "reversed", "idorder", "constant"])
@pytest.mark.parametrize("seed", [1, 5])
@pytest.mark.parametrize("day", [irm_day, shot_noise_day])
def test_admission_with_useless_predictions_is_as_good_as_the_best_classic(day, seed, kind, tmp_path):
    # IRM favours LFU, shot noise S3-FIFO and (in large caches) LRU: useless predictions
    # leave predictive+admission to its request counts, which must match the best of them
    trace, size, yesterday = day(seed)
    margins = margins_over_classics(trace, size, prediction(kind, size, yesterday, seed), tmp_path)
    assert min(margins) >= -0.005, margins


@pytest.mark.parametrize("seed", [1, 6])
def test_admission_with_good_predictions_beats_every_classic(seed, tmp_path):
    trace, size, yesterday = irm_day(seed)
    margins = margins_over_classics(trace, size, prediction("yesterday", size, yesterday, seed), tmp_path)
    assert min(margins) > 0.01, margins
