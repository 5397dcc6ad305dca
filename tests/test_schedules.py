"""Each sparsity schedule follows its formula."""

from __future__ import annotations

import pytest

from fairfront.spaces.schedules import SparsitySchedule, polynomial_sparsity


def test_one_shot_is_final_from_the_first_step() -> None:
    s = SparsitySchedule("one_shot", 0.7)
    assert [s.at(t, 100) for t in (0, 50, 99)] == [0.7, 0.7, 0.7]


def test_gradual_follows_zhu_and_gupta_cubic() -> None:
    s = SparsitySchedule("gradual", 0.8, start=0.1, end=0.9, frequency=10)
    total = 100
    t0, n, dt = 10, 8, 10  # window 10..90 in 8 updates of 10 steps
    for t in range(total):
        if t < t0:
            expected = 0.0
        else:
            k = min((t - t0) // dt, n)
            expected = 0.8 + (0.0 - 0.8) * (1 - (k * dt) / (n * dt)) ** 3
        assert s.at(t, total) == pytest.approx(expected, abs=1e-12), t
    assert s.at(90, total) == pytest.approx(0.8)
    # sparsity only grows
    values = [s.at(t, total) for t in range(total)]
    assert values == sorted(values)


def test_iterative_takes_k_equal_steps() -> None:
    s = SparsitySchedule("iterative", 0.6, start=0.0, end=0.8, iterations=3)
    values = sorted({round(s.at(t, 90), 10) for t in range(90)})
    assert values == pytest.approx([0.2, 0.4, 0.6])
    assert s.at(0, 90) == pytest.approx(0.2)
    assert s.at(89, 90) == pytest.approx(0.6)


def test_polynomial_reaches_final_and_starts_at_initial() -> None:
    assert polynomial_sparsity(5, final=0.9, initial=0.1, start_step=5, n_updates=3, frequency=2) == pytest.approx(0.1)
    assert polynomial_sparsity(50, final=0.9, initial=0.1, start_step=5, n_updates=3, frequency=2) == pytest.approx(0.9)


def test_bad_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match="allowed: one_shot, iterative, gradual"):
        SparsitySchedule("cosine", 0.5)
    with pytest.raises(ValueError, match="window"):
        SparsitySchedule("gradual", 0.5, start=0.8, end=0.2)
