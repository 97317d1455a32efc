"""ruvattn.lab.perf: fair float32 peers, the roofline arithmetic, interleaved comparison and the
regression floors (the timings themselves are for the benchmark notebooks, never asserted here)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ruvattn import reference as ref
from ruvattn.lab import perf


def _data(seed=0, m=5, n=40, d=16):
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal(s).astype(np.float32) for s in ((m, d), (n, d), (n, d)))


def test_numpy_peer_is_attention_in_float32():
    qs, k, v = _data()
    out = perf.numpy_attention(qs, k, v)
    assert out.dtype == np.float32
    expected = np.array([ref.attention(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64))[0]
                         for q in qs])  # fmt: skip
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    one = perf.numpy_attention(qs[0], k, v)
    assert one.dtype == np.float32 and np.allclose(one, expected[0], atol=1e-6)


def test_numpy_peer_refuses_to_be_timed_in_float64():
    qs, k, v = _data()
    with pytest.raises(TypeError, match="float64"):
        perf.numpy_attention(qs, k.astype(np.float64), v)


def test_numpy_neighbours_peer_is_neighbour_attention_in_float32():
    qs, table, _ = _data(1, m=6, n=30)
    ids = np.random.default_rng(2).integers(0, 30, (6, 4))
    out = perf.numpy_neighbours(qs, table, ids)
    expected = ref.neighbour_attention(qs, table, table, np.arange(0, 25, 4), ids.ravel())
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_numpy_favor_peer_is_favor_attention_in_float32():
    from ruvattn.reference import linear as ref_linear

    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((7, 16), (300, 16), (300, 16)))
    proj = rng.standard_normal((32, 16))
    out = perf.numpy_favor(q, k, v, proj)
    assert out.dtype == np.float32
    expected = np.array([ref_linear.linear_attention(x, k, v, "favor", proj)[0] for x in q])
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="float64"):
        perf.numpy_favor(q, k.astype(np.float64), v, proj)


def test_roofline_picks_the_binding_limit():
    lim = perf.Limits(sgemm_gflops=100.0, read_gbs=10.0, threads=1)
    lim._at[1 << 20] = 50.0  # a 1 MiB working set reads at 50 GB/s here
    t, bound = lim.roofline_s(flops=1e9, nbytes=1 << 20)  # 10 ms of FLOPs against 21 µs of reading
    assert bound == "FLOP" and t == pytest.approx(1e-2)
    t, bound = lim.roofline_s(flops=1e3, nbytes=1 << 20)
    assert bound == "bandwidth" and t == pytest.approx((1 << 20) / 50e9)
    assert lim.read_gbs_at(1 << 30) == 10.0  # beyond 256 MiB: main memory


def test_compare_checks_outputs_then_reports_the_peer_over_ruvattn_ratio():
    lim = perf.Limits(100.0, 10.0, 1)
    lim._at[4096] = 10.0
    fast = perf.Workload("w", 1e3, 4096, lambda: np.ones(3), {"slow": lambda: (time.sleep(0.002), np.ones(3))[1]})
    (row,) = perf.compare([fast], lim, rounds=3, min_round_s=1e-4)
    assert row.best_peer == "slow" and row.ratio > 5
    assert row.times_us["slow"] >= 2000
    assert "| w | " in perf.format_table([row], lim) and "(0.0" not in perf.format_table([row], lim)
    wrong = perf.Workload("x", 1.0, 4096, lambda: np.ones(3), {"other": lambda: np.zeros(3)})
    with pytest.raises(AssertionError, match="other does not compute"):
        perf.compare([wrong], lim, rounds=1)


def test_floors_flag_only_a_ratio_below_its_floor():
    row = perf.Row("a", {"ruvattn": 100.0, "numpy": 80.0, "torch": 150.0}, "numpy", 0.8, 10.0, "FLOP")
    floors = {("a", "numpy"): 0.85, ("a", "torch"): 0.85, ("a", "jax"): 1.0, ("b", "numpy"): 1.0}
    (msg,) = perf.check_floors([row], floors)
    assert msg.startswith("a: numpy / ruvattn = 0.80x")


def test_every_standard_workload_has_peers_that_compute_the_same():
    for w in perf.standard_workloads("ci", peers=("numpy",)):
        base = np.asarray(w.ruvattn())
        assert base.dtype == np.float32
        for name, fn in w.peers.items():
            np.testing.assert_allclose(np.asarray(fn()), base, atol=1e-4, err_msg=f"{w.name}: {name}")


@pytest.mark.parametrize(("second", "code"), [(150.0, 0), (50.0, 1)])
def test_check_measures_a_missed_floor_again_and_fails_only_on_a_second_miss(monkeypatch, second, code, capsys):
    """``--check``: a ratio below its floor is measured once more; only a second miss fails."""
    lim = perf.Limits(100.0, 10.0, 1)
    lim._at[4096] = 10.0
    a, b = perf.Workload("a", 1.0, 4096, lambda: None), perf.Workload("b", 1.0, 4096, lambda: None)
    peer_times = iter([{"a": 50.0, "b": 200.0}, {"a": second}])  # first round: "a" misses, "b" is fine
    seen = []

    def fake_compare(workloads, limits, rounds):
        seen.append([w.name for w in workloads])
        times = next(peer_times)
        return [perf.Row(w.name, {"ruvattn": 100.0, "numpy": times[w.name]}, "numpy", None, 1.0, "FLOP")
                for w in workloads]  # fmt: skip

    monkeypatch.setattr(perf, "measure_limits", lambda threads: lim)
    monkeypatch.setattr(perf, "standard_workloads", lambda size: [a, b])
    monkeypatch.setattr(perf, "compare", fake_compare)
    monkeypatch.setattr(perf, "FLOORS", {("a", "numpy"): 0.85, ("b", "numpy"): 0.85})
    assert perf.main(["--size", "ci", "--check"]) == code
    assert seen == [["a", "b"], ["a"]]  # only the missed workload is measured again
    assert ("floor missed: a: numpy / ruvattn = 0.50x" in capsys.readouterr().err) == (code == 1)
