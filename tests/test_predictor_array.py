"""PredictorArray in Amaranth's simulator (fixed and random geometries): every gradient
row bit-exact against model_sw.adagp_predictor.predictor_forward_int, every counter equal
to predictor_array_cycles / assistant_cycles, error status for bad k."""
import numpy as np
import pytest

from model_sw.adagp_predictor import PredictorSizeError
from model_sw.autoassist_assistant import assistant_logit_int
from tb.predictor_array_pysim import run_pysim, sample_beats
from predictor_hw.predictor_array import (
    ASSIST_CLASSES, ERR_K, ERR_NONE, ERR_WADDR, TGT_CONV, TGT_FC, Geometry, PredictorArray, PredictorArrayError,
    assistant_cycles, check_k, feature_beats, golden_logits, golden_rows, pack_assistant_weights,
    pack_predictor_weights, predictor_array_cycles)
from predictor_hw.interfaces import grad_row_layout, sample_layout
from rtl.config import AcceleratorConfig

CFG = AcceleratorConfig(name="pred-unit", rows=4, cols=4, spad_a_words=64, spad_b_words=64,
                        acc_words=32, mem_addr_bits=12, pred_kmax=64)
# odd shapes: a window wider than the array (pred_cols < pool^2), channels not a multiple of rows
CFG_ODD = CFG.replace(name="pred-odd", pred_rows=2, pred_cols=2, pred_channels=3, pred_p=4, pred_kmax=20)
# a tiny fc fan-in (F = 1) and tall array: output rows outpace the tiles (structural stalls),
# more columns than pixels (masked columns)
CFG_STALL = CFG.replace(name="pred-stall", pred_rows=16, pred_cols=4, pred_channels=1, pred_p=2,
                        pred_kmax=130)


def random_params(cfg, rng, k_rows=None):
    g = Geometry(cfg)
    kr = k_rows or cfg.pred_kmax
    return dict(w1=rng.integers(-128, 128, (g.C, 1, 3, 3)), w2=rng.integers(-128, 128, (kr, g.F)),
                shift1=int(rng.integers(6, 11)), shift2=int(rng.integers(7, 12)))


def pred_job(cfg, x, params, k, channels=None):
    channels = list(range(x.shape[0])) if channels is None else channels
    return dict(mode=0, k=k, shift1=params["shift1"], shift2=params["shift2"], beats=sample_beats(x, channels),
                want=golden_rows(cfg, x, params, k, channels))


@pytest.mark.parametrize("cfg,ks", [(CFG, [1, 9, 64, 17]), (CFG_ODD, [20, 3]), (CFG_STALL, [130, 64])],
                         ids=["4x4", "odd", "stall"])
def test_predictor_rows_bit_exact_and_cycles(cfg, ks):
    rng = np.random.default_rng(1)
    params = random_params(cfg, rng)
    jobs = []
    for k in ks:
        x = rng.integers(-128, 128, (3, 1, cfg.pred_p, cfg.pred_p))
        jobs.append(pred_job(cfg, x, params, k, channels=rng.permutation(10)[:3]))
    res = run_pysim(cfg, jobs, pack_predictor_weights(cfg, params["w1"], params["w2"]))
    for job, r in zip(jobs, res):
        assert r["out"] == job["want"], f"k={job['k']}"
        assert r["error"] == ERR_NONE
        assert r["counters"] == dict(predictor_array_cycles(cfg, len(job["beats"]), job["k"]), errors=0)
    if cfg is CFG_STALL:   # the configuration is there to exercise the structural stalls
        assert all(predictor_array_cycles(cfg, 3, k)["stall_cycles"] > 0 for k in ks)


def test_predictor_back_pressure_changes_only_stalls():
    cfg = CFG
    rng = np.random.default_rng(2)
    params = random_params(cfg, rng)
    x = rng.integers(-128, 128, (4, 1, 4, 4))
    job = pred_job(cfg, x, params, 40)
    [r] = run_pysim(cfg, [job], pack_predictor_weights(cfg, params["w1"], params["w2"]),
                    ready_prob=0.3, valid_prob=0.5, seed=3)
    assert r["out"] == job["want"]
    want = predictor_array_cycles(cfg, 4, 40)
    c = r["counters"]
    assert c["stall_cycles"] > want["stall_cycles"]
    assert c["busy_cycles"] - c["stall_cycles"] == want["busy_cycles"] - want["stall_cycles"]
    for n in ("step_cycles", "macs", "in_beats", "out_beats"):
        assert c[n] == want[n], n


@pytest.mark.parametrize("k,valid_prob", [(1, 0.004), (3, 0.006), (9, 0.01)])
def test_predictor_samples_arriving_late(k, valid_prob):
    """Samples that arrive rarely (a gap longer than a sample's conv phase): the sample
    buffer is often empty when a sample's drain ends, so the conv phase must wait for the
    next sample (check_step asserts the step decision every cycle)."""
    cfg = CFG
    rng = np.random.default_rng(10 + k)
    params = random_params(cfg, rng)
    x = rng.integers(-128, 128, (5, 1, 4, 4))
    job = pred_job(cfg, x, params, k)
    [r] = run_pysim(cfg, [job], pack_predictor_weights(cfg, params["w1"], params["w2"]),
                    valid_prob=valid_prob, seed=k)
    assert r["out"] == job["want"]
    want = predictor_array_cycles(cfg, 5, k)
    for n in ("step_cycles", "macs", "in_beats", "out_beats"):
        assert r["counters"][n] == want[n], n
    assert r["counters"]["busy_cycles"] > want["busy_cycles"]      # it did wait for samples


def test_assistant_logits_bit_exact_and_cycles():
    cfg = CFG
    g = Geometry(cfg)
    rng = np.random.default_rng(4)
    jobs, wants = [], []
    w = rng.integers(-128, 128, 5)
    u = rng.integers(-(1 << 20), 1 << 20, 10)
    for n in (g.L + 3, 2):
        x = rng.integers(-128, 128, (n, 5))
        y = rng.integers(0, 10, n)
        jobs.append(dict(mode=1, k=5, beats=feature_beats(cfg, x, y)))
        wants.append(golden_logits(cfg, x, w, u, y))
        # the golden beats are assistant_logit_int itself, regrouped
        assert [z for b in wants[-1] for z, e in zip(b["z"], b["en"]) if e] == list(assistant_logit_int(x, w, u, y))
    res = run_pysim(cfg, jobs, pack_assistant_weights(cfg, w, u))
    for job, want, r, n in zip(jobs, wants, res, (g.L + 3, 2)):
        assert r["out"] == want
        assert r["counters"] == dict(assistant_cycles(cfg, n, 5), errors=0)


@pytest.mark.parametrize("k_ok_port", [False, True], ids=["k_checked_here", "k_ok_from_driver"])
@pytest.mark.parametrize("valid_prob", [1.0, 0.5])
def test_bad_k_sets_error_status_and_drops_the_job(k_ok_port, valid_prob):
    """Refused sample jobs of 2 and 4 beats (with gaps: the array waits in DROP, taking every
    beat up to the last), refused feature jobs of 1 and 3 beats, then a good job."""
    cfg = CFG
    rng = np.random.default_rng(5)
    params = random_params(cfg, rng)
    x = rng.integers(-128, 128, (2, 1, 4, 4))
    x4 = rng.integers(-128, 128, (4, 1, 4, 4))
    good = pred_job(cfg, x, params, 8)
    jobs = [dict(mode=0, k=0, beats=sample_beats(x, [0, 1])),
            dict(mode=0, k=cfg.pred_kmax + 1, beats=sample_beats(x4, [0, 1, 2, 3])),
            dict(mode=1, k=0, beats=[dict(x=[0] * 16, y=[0] * 16, en=0xFFFF, last=1)]),
            dict(mode=1, k=cfg.pred_kmax + 1,
                 beats=[dict(x=[0] * 16, y=[0] * 16, en=0xFFFF, last=int(i == 2)) for i in range(3)]),
            good]
    res = run_pysim(cfg, jobs, pack_predictor_weights(cfg, params["w1"], params["w2"]), k_ok_port=k_ok_port,
                    valid_prob=valid_prob)
    for r in res[:4]:
        assert r["out"] == [] and r["error"] == ERR_K and r["counters"]["errors"] == 1
        assert r["counters"]["macs"] == 0
    assert res[4]["out"] == good["want"]        # the array goes on after a refused job


def test_a_driver_k_ok_that_disagrees_with_k_is_caught():
    """check_step asserts the port against the rule: a driver that says k = 0 runs fails."""
    cfg = CFG
    x = np.zeros((1, 1, 4, 4), dtype=np.int64)
    jobs = [dict(mode=0, k=0, k_ok=1, beats=sample_beats(x, [0]))]
    with pytest.raises(AssertionError, match="k_ok 1 for k 0"):
        run_pysim(cfg, jobs, [], k_ok_port=True)


def test_weight_address_out_of_range_is_refused():
    cfg = CFG
    g = Geometry(cfg)
    rng = np.random.default_rng(6)
    params = random_params(cfg, rng)
    x = rng.integers(-128, 128, (2, 1, 4, 4))
    job = pred_job(cfg, x, params, 20)
    bad = [dict(target=TGT_CONV, addr=g.conv_depth, data=-1 & ((1 << 32) - 1)),
           dict(target=TGT_FC, addr=g.fc_depth, data=(1 << (8 * g.L)) - 1)]
    [r] = run_pysim(cfg, [job], pack_predictor_weights(cfg, params["w1"], params["w2"]) + bad)
    assert r["out"] == job["want"] and r["error"] == ERR_WADDR


def test_driver_side_checks_name_the_bad_value():
    for k in (0, CFG.pred_kmax + 1):
        with pytest.raises(PredictorSizeError, match=f"k={k}"):
            check_k(CFG, k)
        with pytest.raises(PredictorSizeError, match=f"k={k}"):
            predictor_array_cycles(CFG, 4, k)
    with pytest.raises(PredictorArrayError, match="conv weight shape"):
        pack_predictor_weights(CFG, np.zeros((3, 1, 3, 3)), np.zeros((4, CFG.pred_features)))
    with pytest.raises(PredictorArrayError, match="classes"):
        pack_assistant_weights(CFG, np.zeros(4), np.zeros(ASSIST_CLASSES + 1))
    with pytest.raises(PredictorArrayError, match="empty batch"):
        feature_beats(CFG, np.zeros((0, 3)), np.zeros(0))


def test_stream_layouts_are_the_shared_contract():
    dut = PredictorArray(CFG)
    dut._MustUse__silence = True      # never elaborated here
    assert dut.samples.payload.shape() == sample_layout(CFG)
    assert dut.rows.payload.shape() == grad_row_layout(CFG)


@pytest.mark.parametrize("seed", range(6))
def test_random_geometries(seed):
    """Random array shapes (1..4 rows, 1..8 columns), pools 1 and 2, sample sides with
    non-power-of-two pooled sides, 1..5 channels, small pred_kmax: rows and logits
    bit-exact, every counter equal to the cycle model."""
    rng = np.random.default_rng(100 + seed)
    pool = int(rng.choice([1, 2]))
    cfg = CFG.replace(name=f"pred-rand{seed}", pred_rows=int(rng.choice([1, 2, 4])),
                      pred_cols=int(rng.choice([1, 2, 4, 8])), pred_pool=pool,
                      pred_p=int(rng.choice([2, 4, 6] if pool == 2 else [1, 3, 5])),
                      pred_channels=int(rng.integers(1, 6)), pred_kmax=int(rng.integers(1, 40)))
    g = Geometry(cfg)
    params = random_params(cfg, rng)
    jobs = []
    for _ in range(2):
        x = rng.integers(-128, 128, (int(rng.integers(1, 4)), 1, g.P, g.P))
        jobs.append(pred_job(cfg, x, params, int(rng.integers(1, g.kmax + 1))))
    kf, n = int(rng.integers(1, g.kmax + 1)), int(rng.integers(1, 2 * g.L + 2))
    xa, ya = rng.integers(-128, 128, (n, kf)), rng.integers(0, 10, n)
    wa, ua = rng.integers(-128, 128, kf), rng.integers(-1000, 1000, 10)
    jobs.append(dict(mode=1, k=kf, beats=feature_beats(cfg, xa, ya), want=golden_logits(cfg, xa, wa, ua, ya)))
    res = run_pysim(cfg, jobs, pack_predictor_weights(cfg, params["w1"], params["w2"])
                    + pack_assistant_weights(cfg, wa, ua))
    for job, r in zip(jobs, res):
        assert r["out"] == job["want"], (cfg, job["k"])
        cm = (predictor_array_cycles(cfg, len(job["beats"]), job["k"]) if job["mode"] == 0
              else assistant_cycles(cfg, n, kf))
        assert r["counters"] == dict(cm, errors=0), (cfg, job["k"])


def test_requant_int8_equals_numerics():
    """The array's two-stage requantizer (requant_int8: registered shift/round bit, then range
    flags and an 8-bit rounding add) against numerics.requantize for every shift 0..31, with
    and without ReLU, on values at and around the saturation bounds and random int32s."""
    from amaranth import Module, Signal, signed
    from amaranth.sim import Simulator
    from model_sw import numerics
    from predictor_hw.predictor_array import requant_int8, shift_onehot
    from rtl.epilogue import below_guard_mask

    lanes = 8
    m = Module()
    xs = [Signal(signed(32), name=f"x{i}") for i in range(lanes)]
    sh_in, relu = Signal(6), Signal()
    sh, below, oh = Signal(6), Signal(32), Signal(32)
    m.d.sync += [sh.eq(sh_in), below.eq(below_guard_mask(sh_in, 32)), oh.eq(shift_onehot(sh_in, 32))]
    outs = [Signal(signed(8), name=f"o{i}") for i in range(lanes)]
    m.d.comb += [o.eq(v) for o, v in zip(outs, requant_int8(m, xs, sh, below, oh, relu))]
    rng = np.random.default_rng(5)
    cases = []
    for s in range(32):
        edge = [v * (1 << s) + d for v in (-129, -128, -127, -1, 0, 1, 126, 127, 128)
                for d in (-(1 << s >> 1) - 1, -(1 << s >> 1), 0, (1 << s >> 1), (1 << s >> 1) + 1)]
        vals = np.clip(np.array(edge + list(rng.integers(-2**31, 2**31, 24))), -2**31, 2**31 - 1)
        for i in range(0, len(vals), lanes):
            chunk = list(vals[i:i + lanes]) + [0] * (lanes - len(vals[i:i + lanes]))
            cases += [(s, r, chunk) for r in (0, 1)]
    bad = []

    async def bench(ctx):
        for s, r, chunk in cases:
            ctx.set(sh_in, s)
            await ctx.tick()                       # shift and its mask registered
            for x, v in zip(xs, chunk):
                ctx.set(x, int(v))
            await ctx.tick()                       # stage 1 registered
            ctx.set(relu, r)
            want, _ = numerics.requantize(np.array(chunk, dtype=np.int64), s, 8, relu=bool(r))
            got = [ctx.get(o) for o in outs]
            if got != [int(w) for w in want]:
                bad.append((s, r, chunk, got, list(want)))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(cases) > 500 and not bad, bad[:3]


def test_weight_written_as_the_job_starts_is_used():
    """The Assistant weights are read one cycle ahead (registered block-RAM data): a weight
    beat written in the very cycle a job starts (to the first feature's address) must still
    reach that job (the array forwards it)."""
    cfg = CFG
    rng = np.random.default_rng(9)
    w = rng.integers(-128, 128, 5)
    u = rng.integers(-(1 << 20), 1 << 20, 10)
    x = rng.integers(-128, 128, (3, 5))
    y = rng.integers(0, 10, 3)
    w_new = w.copy()
    w_new[0] = -w[0] - 1 if w[0] >= 0 else w[0] + 77
    beats = pack_assistant_weights(cfg, w, u) + [dict(target=2, addr=0, data=int(w_new[0]) & 0xFF)]
    res = run_pysim(cfg, [dict(mode=1, k=5, beats=feature_beats(cfg, x, y))], beats, last_weight_at_start=True)
    assert golden_logits(cfg, x, w_new, u, y) != golden_logits(cfg, x, w, u, y)
    assert res[0]["out"] == golden_logits(cfg, x, w_new, u, y)
