"""rtl.paths: the logic-depth estimate on small hand-made ECP5 netlists (Yosys JSON
shape), checked against the delay model's arithmetic done by hand here."""
import pytest

from rtl import paths
from rtl.synth import SynthError


def ff(d, q, ce=None):
    conn = {"CLK": [2], "DI": [d], "Q": [q]}
    dirs = {"CLK": "input", "DI": "input", "Q": "output"}
    if ce is not None:
        conn["CE"], dirs["CE"] = [ce], "input"
    return {"type": "TRELLIS_FF", "connections": conn, "port_directions": dirs, "attributes": {}}


def lut(ins, z):
    conn = {p: [b] for p, b in zip("ABCD", ins)}
    conn["Z"] = [z]
    dirs = {p: "input" for p in "ABCD"[:len(ins)]}
    dirs["Z"] = "output"
    return {"type": "LUT4", "connections": conn, "port_directions": dirs, "attributes": {}}


def module(cells, names):
    return {"ports": {"clk": {"direction": "input", "bits": [2]}},
            "cells": cells,
            "netnames": {n: {"bits": [b], "attributes": {}} for n, b in names.items()}}


def worst(mod):
    nl = paths.Netlist(mod)
    oa = paths.arrivals(nl)
    return nl, oa, sorted(paths.endpoints(nl, oa), key=lambda e: -e[0])


def test_arrival_is_the_sum_of_the_model_delays_along_the_longest_path():
    # q0 -> LUT -> LUT -> ff1.D, and q0 -> ff2.D directly; q0 also fans out to 3 sinks
    cells = {"f0": ff(20, 10), "l1": lut([10], 11), "l2": lut([11, 10], 12),
             "f1": ff(12, 13), "f2": ff(10, 14), "f3": ff(13, 20)}
    mod = module(cells, {"q0": 10, "a": 11, "b": 12, "q1": 13, "q2": 14, "q3": 20})
    nl, oa, eps = worst(mod)
    nd = paths.net_delay
    assert nl.fanout(10) == 3
    expect = paths.CLK_TO_Q + nd(3) + paths.LUT + nd(1) + paths.LUT + nd(1) + paths.SETUP
    assert eps[0][0] == pytest.approx(expect)
    assert eps[0][1] == "f1"
    assert paths.trace(nl, oa, eps[0][3]) == [10, 11, 12]
    direct = [e for e in eps if e[1] == "f2"][0]
    assert direct[0] == pytest.approx(paths.CLK_TO_Q + nd(3) + paths.SETUP)


def test_fanout_makes_a_net_slower_and_a_clock_enable_is_an_endpoint():
    cells = {"f0": ff(10, 10), "l": lut([10], 11)}
    for i in range(64):
        cells[f"s{i}"] = ff(10, 100 + i, ce=11)
    mod = module(cells, {"q": 10, "en": 11})
    nl, oa, eps = worst(mod)
    assert nl.fanout(10) == 66          # f0 itself, the LUT and the 64 D inputs
    ce_eps = [e for e in eps if e[2] == "CE"]
    assert len(ce_eps) == 64
    assert ce_eps[0][0] == pytest.approx(paths.CLK_TO_Q + paths.net_delay(66) + paths.LUT
                                        + paths.net_delay(64) + paths.SETUP)
    assert paths.net_delay(64) > paths.net_delay(1)


def test_unknown_preset_is_a_clear_error(tmp_path):
    with pytest.raises(SynthError, match="unknown preset 'nope'"):
        paths.report("engine", "nope", out=str(tmp_path))


def test_a_missing_netlist_or_unit_is_a_clear_error(tmp_path):
    with pytest.raises(SynthError, match="no such file"):
        paths.report("engine", "small", netlist=str(tmp_path / "nope.json"))
    p = tmp_path / "n.json"
    p.write_text('{"modules": {"other": {}}}')
    with pytest.raises(SynthError, match="no module 'engine'"):
        paths.report("engine", "small", netlist=str(p))


def mult(a, b, p, registered):
    conn = {"A0": [a], "B0": [b], "P0": [p], "CLK0": [2]}
    dirs = {"A0": "input", "B0": "input", "P0": "output", "CLK0": "input"}
    params = {"REG_OUTPUT_CLK": "CLK0" if registered else "NONE"}
    return {"type": "MULT18X18D", "connections": conn, "port_directions": dirs,
            "parameters": params, "attributes": {}}


@pytest.mark.parametrize("registered", [False, True])
def test_a_dsp_with_its_output_register_ends_and_starts_paths(registered):
    # ff -> MULT (A) -> ff, B from a second ff
    cells = {"fa": ff(20, 10), "fb": ff(20, 11), "m": mult(10, 11, 12, registered),
             "fp": ff(12, 13), "fz": ff(13, 20)}
    mod = module(cells, {"a": 10, "b": 11, "p": 12, "q": 13, "z": 20})
    nl, oa, eps = worst(mod)
    nd = paths.net_delay
    into_fp = [e for e in eps if e[1] == "fp"][0][0]
    into_m = [e[0] for e in eps if e[1] == "m"]
    if registered:     # two paths: into the DSP's register, and out of it
        assert max(into_m) == pytest.approx(paths.CLK_TO_Q + nd(1) + paths.DSP_REG_SETUP)
        assert into_fp == pytest.approx(paths.DSP_CLK_TO_Q + nd(1) + paths.SETUP)
    else:              # one path through the multiplier
        assert into_m == []
        assert into_fp == pytest.approx(paths.CLK_TO_Q + nd(1) + paths.MULT + nd(1) + paths.SETUP)
