"""`absence`: silence judged against each key's own interval, at any rate, on timer ticks."""

from __future__ import annotations

from oplab import make_op, rec

from gateway.clock import FakeClock


def heard(run, clock: FakeClock, machine: str, times: list[float]) -> None:  # type: ignore[no-untyped-def]
    for t in times:
        clock.t = t
        run.feed([rec(machine, t, temperature=50.0)])


def test_silence_is_three_of_the_keys_own_intervals_whatever_the_rate() -> None:
    clock = FakeClock(0.0)
    run = make_op("absence", {"after": 3, "min_silence": 1}, clock)
    heard(run, clock, "fast", [0.5 * k for k in range(20)])  # 2 Hz, last at 9.5
    heard(run, clock, "slow", [2.0 * k for k in range(10)])  # 0.5 Hz, last at 18
    assert run.timer(10.9) == []
    [fast] = run.timer(11.1)  # 1.6 s after 9.5: more than 3 x 0.5 s
    assert fast.key == ("fast",)
    assert fast.fields["silent"] is True
    assert fast.fields["usual_interval"] == 0.5
    assert fast.fields["last_ts"] == 9.5
    assert fast.fields["machine"] == "fast"
    assert run.timer(23.9) == []  # slow is allowed 6 s; fast was reported once
    [slow] = run.timer(24.1)
    assert slow.key == ("slow",)
    assert slow.fields["silent_for"] == 24.1 - 18.0


def test_a_key_is_not_judged_on_its_first_few_jittered_intervals() -> None:
    """A 1 Hz device whose timestamps jitter: its first three intervals' median (0.4 s)
    would call one reading a second late a silence."""
    clock = FakeClock(0.0)
    run = make_op("absence", {"after": 3, "min_silence": 1}, clock)
    for arrival, ts in enumerate([0.0, 0.4, 2.0, 2.4]):
        clock.t = float(arrival)
        run.feed([rec("m", ts, x=1.0)])
    assert run.timer(4.9) == []  # 1.9 s quiet: one reading late, not a silence
    run = make_op("absence", {"after": 3, "min_silence": 1, "warmup": 3}, clock)
    for arrival, ts in enumerate([0.0, 0.4, 2.0, 2.4]):
        clock.t = float(arrival)
        run.feed([rec("m", ts, x=1.0)])
    assert run.timer(4.9)[0].fields["silent"] is True  # what a warmup of 3 said


def test_a_key_heard_again_is_reported_back_and_its_silence_is_not_learnt() -> None:
    clock = FakeClock(0.0)
    run = make_op("absence", {}, clock)
    heard(run, clock, "m", [float(k) for k in range(10)])
    [silent] = run.timer(13.5)
    assert silent.fields["silent"] is True
    clock.t = 30.0
    [back] = run.feed([rec("m", 30.0, temperature=50.0)])
    assert back.fields["silent"] is False
    assert back.fields["silent_for"] == 21.0
    assert back.fields["usual_interval"] == 1.0  # the 21 s gap was not learnt
    heard(run, clock, "m", [31.0, 32.0])
    assert run.timer(34.5) == []
    assert run.timer(35.5)[0].fields["silent"] is True


def test_a_backlog_delivered_in_one_burst_keeps_its_real_spacing() -> None:
    clock = FakeClock(100.0)
    run = make_op("absence", {"min_silence": 0.5}, clock)
    run.feed([rec("m", float(t), x=1.0) for t in range(60, 100)])  # 40 s of backlog at once
    heard(run, clock, "m", [100.0 + k for k in range(1, 4)])
    assert run.timer(105.5) == []  # 2.5 s: not yet 3 of its 1 s intervals
    assert run.timer(106.5)[0].fields["usual_interval"] == 1.0


def test_duplicates_and_a_batch_of_late_readings_do_not_shrink_the_interval() -> None:
    clock = FakeClock(0.0)
    run = make_op("absence", {"min_silence": 0.5}, clock)
    for t in range(10):
        clock.t = float(t)
        run.feed([rec("m", t, x=1.0), rec("m", t, x=1.0), rec("m", t - 0.5, x=1.0)])
    assert run.timer(11.5) == []
    assert run.timer(12.5)[0].fields["usual_interval"] == 1.0


def test_a_new_key_is_not_judged_before_warmup_and_min_silence_holds() -> None:
    clock = FakeClock(0.0)
    run = make_op("absence", {"warmup": 3, "min_silence": 10}, clock)
    heard(run, clock, "m", [0.0, 0.1, 0.2])  # two intervals: not warm
    assert run.timer(100.0) == []
    heard(run, clock, "m", [100.1, 100.2])  # warm now (the 99.9 s gap is learnt: not warm)
    assert run.timer(109.0) == []  # 3 x 0.1 s would be 0.3 s: min_silence says 10 s
    assert run.timer(110.5)[0].fields["silent"] is True
