"""The separable experiment in quick mode (seconds)."""

import pytest

from kerascnn.analysis import conv_macs, conv_params, separable_conv_macs, separable_conv_params

from .common import check_files, run_quick


@pytest.fixture(scope="module")
def separable_run(tmp_path_factory):
    return run_quick("separable", tmp_path_factory)


def test_separable_files_and_verdict(separable_run):
    out, result, said = separable_run
    check_files(out, "separable", result, said)


def test_separable_counts_match_formulas(separable_run):
    rows = separable_run[1]["rows"]
    assert [r["channels"] for r in rows] == separable_run[1]["budget"]["widths"]
    assert len(rows) >= 3
    for r in rows:
        c, n = r["channels"], r["size"]
        std, sep = r["standard"], r["separable"]
        assert std["params"] == conv_params(3, c, c, use_bias=False) == 9 * c * c
        assert sep["params"] == separable_conv_params(3, c, c, use_bias=False) == 9 * c + c * c
        assert sep["params"] == sep["params_depthwise"] + sep["params_pointwise"]
        assert std["macs"] == conv_macs(n, n, 3, c, c)
        assert sep["macs"] == separable_conv_macs(n, n, 3, c, c)
        formula = 1 / c + 1 / 9
        assert r["formula_ratio"] == pytest.approx(formula)
        assert r["ratio_params"] == pytest.approx(formula) and r["ratio_params"] < 1
        assert r["ratio_macs"] == pytest.approx(formula) and r["ratio_macs"] < 1
        # Latency is measured on a shared CPU: only its sanity is checked, not its value.
        assert std["latency_ms"] > 0 and sep["latency_ms"] > 0
        assert r["ratio_latency"] == pytest.approx(sep["latency_ms"] / std["latency_ms"], rel=1e-2)
