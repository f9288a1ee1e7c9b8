"""``bench scale`` cuts its samples into the segments it reports, and judges them."""

from __future__ import annotations

from bench.scale import Mark, Phase, labels, segments


def marks(step: int, total: int, micros: float, megabytes: float = 100.0) -> list[Mark]:
    """A mark every ``step`` events, each costing ``micros`` µs, memory constant."""
    done = [*range(step, total, step), total]
    return [Mark(0, 0.0, megabytes), *(Mark(n, n * micros / 1e6, megabytes) for n in done)]


def test_a_million_events_are_cut_at_100k_and_300k() -> None:
    cut = segments(marks(10_000, 1_000_000, micros=50.0), 1_000_000)

    assert [(s.label, s.first, s.last) for s in cut] == [
        ("0-100k", 0, 100_000),
        ("100k-300k", 100_000, 300_000),
        ("300k-1M", 300_000, 1_000_000),
    ]
    assert [round(s.microseconds_per_event, 6) for s in cut] == [50.0, 50.0, 50.0]


def test_a_cut_falls_on_the_first_mark_past_its_bound() -> None:
    # Cohorts of 7,000 events: the 100k bound is reached at 105,000.
    cut = segments(marks(7_000, 1_000_000, micros=20.0), 1_000_000)

    assert [(s.first, s.last) for s in cut] == [
        (0, 105_000),
        (105_000, 301_000),
        (301_000, 1_000_000),
    ]


def test_a_mark_past_two_bounds_ends_the_later_segment() -> None:
    # Pages of 10,000 over 30,000 events: the first page passes 3,000 and 9,000 at once.
    cut = segments(marks(10_000, 30_000, micros=10.0), 30_000)

    assert [(s.label, s.first, s.last) for s in cut] == [
        ("3k-9k", 0, 10_000),
        ("9k-30k", 10_000, 30_000),
    ]
    assert labels(30_000) == ["0-3k", "3k-9k", "9k-30k"]


def test_a_phase_whose_later_events_cost_more_grows() -> None:
    slow = [Mark(0, 0.0, 100.0), Mark(100, 0.001, 100.0), Mark(300, 0.003, 100.0)]
    slow.append(Mark(1000, 0.003 + 700 * 20e-6, 100.0))  # 20 µs per event, not 10
    phase = Phase("store", segments(slow, 1000))

    assert round(phase.time_growth, 6) == 2.0
    assert not phase.flat
    assert "GROWS" in phase.line()


def test_a_phase_whose_memory_climbs_grows_and_a_steady_one_is_flat() -> None:
    steady = Phase("rebuild", segments(marks(10_000, 1_000_000, micros=30.0), 1_000_000))
    climbing = [
        Mark(m.events, m.seconds, 100.0 + m.events / 10_000) for m in marks(10_000, 1_000_000, 30.0)
    ]
    leaking = Phase("rebuild", segments(climbing, 1_000_000))

    assert steady.flat
    assert steady.memory_growth_mb == 0.0
    assert leaking.memory_growth_mb == 90.0  # 110 MB at 100k, 200 MB at 1M
    assert not leaking.flat


def test_events_stored_past_those_asked_for_end_the_last_segment() -> None:
    # 1,043,000 stored for 1,000,000 asked: the last segment runs to the last mark.
    cut = segments(marks(7_000, 1_043_000, micros=20.0), 1_000_000)

    assert [(s.label, s.first, s.last) for s in cut] == [
        ("0-100k", 0, 105_000),
        ("100k-300k", 105_000, 301_000),
        ("300k-1M", 301_000, 1_043_000),
    ]
