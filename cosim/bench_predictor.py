"""ADA-GP predictor side: captures from model_sw runs and ``python -m cosim bench predictor``.

The bench prints one row per layer (and a ``step`` row) of the digits CNN, simulated on
Verilator through the Accelerator top (bit-exact checks, counters == cosim.predictor_model),
and of a CIFAR-sized CNN's layer shapes from the models alone (``simulated: false``).

:func:`capture_digits` trains the digits CNN with model_sw's quantized ADA-GP
(``adagp-q``) for a few BP steps (so the predictor is trained and its quantized
scales calibrated), then records, for the next batch, everything a GP step of the
hardware needs and every reference it must match: per layer the engine-format
input/weight/output integers and their fracs, the pre- and post-ReLU outputs, and
the predictor's integer parameters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from model_sw import adagp_engine as eng
from model_sw import adagp_reorg as reorg
from model_sw import numerics
from .driver import DriverError


@dataclass
class CapturedLayer:
    name: str
    kind: str                 # conv | linear
    module: nn.Module
    x_int: np.ndarray | None  # layer input as the engine stores it (post-ReLU of the previous layer);
                              # None where only its shape matters (``x_shape``)
    x_frac: int
    w_int: np.ndarray         # int8 operand weights (engine format)
    w_frac: int
    y_pre: np.ndarray         # int8 output before ReLU, (B, C, H, W) or (B, N)
    y_post: np.ndarray        # after ReLU (what the engine's epilogue stores for a hidden layer)
    y_frac: int
    relu: bool                # the engine applies ReLU in this layer's epilogue
    fan_in: int
    gp_scale_log2: int | None  # GP de-normalization 2**s (model_sw Trainer._gp_scale); None: no scale yet
    w_master: np.ndarray = None   # 16-bit master weights and their frac
    w_master_frac: int = 0
    x_shape: tuple = ()       # the input's shape, (B, C, H, W) or (B, N), when ``x_int`` is None

    @property
    def input_shape(self) -> tuple:
        return tuple(self.x_int.shape) if self.x_int is not None else tuple(self.x_shape)


@dataclass
class Capture:
    layers: list
    pred: dict                # predictor int_params (w1, w2, shift1, shift2, pool, frac_out)
    lr_log2: int
    batch: int
    extra: dict = field(default_factory=dict)


def capture_digits(steps: int = 6, batch: int = 32, seed: int = 0) -> Capture:
    """A model_sw adagp-q run on digits: ``steps`` BP steps, then a capture of the next batch."""
    from model_sw.adagp import Trainer, TrainConfig
    from model_sw.data import load_digits_split

    torch.set_num_threads(1)
    data = load_digits_split()
    cfg = TrainConfig(model="cnn", epochs=1, batch=batch)
    tr = Trainer(data, "adagp-q", seed, cfg)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(data.x_train.shape[0], generator=gen)
    for s in range(steps):
        idx = perm[s * batch:(s + 1) * batch]
        tr.bp_step(data.x_train[idx], data.y_train[idx], s)
    idx = perm[steps * batch:(steps + 1) * batch]
    xb = data.x_train[idx]

    outs, ins = {}, {}
    seq = eng.layers(tr.model)
    names = [n for n, _ in seq]

    def keep(name, layer, y):
        outs[name] = y.detach().clone()

    # the inputs each layer sees: hook the functional op through on_output of the previous
    with torch.no_grad():
        eng.forward(tr.model, xb, True, steps, keep)
    layers = []
    x = xb
    for i, (name, layer) in enumerate(seq):
        kind = "conv" if isinstance(layer, nn.Conv2d) else "linear"
        if kind == "linear" and x.dim() > 2:
            x = x.flatten(1)
        fx = numerics.choose_frac_bits(x, 8)
        fw = numerics.choose_frac_bits(layer.weight, 8)
        y = outs[name]
        fy = numerics.choose_frac_bits(y, 8)
        y_pre = numerics.quantize(y, fy, 8).numpy()
        last = i == len(seq) - 1
        s = tr._gp_scale(name)
        fm = numerics.choose_frac_bits(layer.weight, 16)
        layers.append(CapturedLayer(
            name=name, kind=kind, module=layer,
            x_int=numerics.quantize(x, fx, 8).numpy(), x_frac=fx,
            w_int=numerics.quantize(layer.weight, fw, 8).numpy(), w_frac=fw,
            y_pre=y_pre, y_post=y_pre if last else np.maximum(y_pre, 0), y_frac=fy, relu=not last,
            fan_in=reorg.fan_in(layer),
            gp_scale_log2=None if s == 0.0 else int(round(math.log2(s))),
            w_master=numerics.quantize(layer.weight, fm, 16).numpy(), w_master_frac=fm))
        x = numerics.dequantize(torch.from_numpy(layers[-1].y_post), fy)
    net = next(iter(tr.bank.nets.values()))
    return Capture(layers=layers, pred=net.int_params(), lr_log2=int(round(math.log2(tr.lr))),
                   batch=batch, extra={"names": names, "steps": steps, "seed": seed})


# ---------------------------------------------------------------------------------
# bench predictor
# ---------------------------------------------------------------------------------
STEADY_STEPS = 3      # GP steps back to back; the last one is the steady-state step


def _bwd_programs(cfg, g, kind: str, first: bool, img) -> list:
    """The layer's backward on the engine: weight gradient, and the data gradient except
    for the first layer (conv layers as cosim.cnn_pass; linear layers as plain GEMMs)."""
    from . import driver
    dy = img.alloc(f"dy{id(g)}", (g.cout, g.batch, g.ho, g.wo))
    x = img.alloc(f"x{id(g)}", (g.cin, g.batch, g.h, g.w))
    w = img.alloc(f"w{id(g)}", (g.cout, g.cin, g.kh, g.kw))
    dw = img.alloc(f"dw{id(g)}", (g.cout, g.cin * g.kh * g.kw))
    kk = g.cin * g.kh * g.kw
    if kind == "linear":   # plain GEMMs: dW = dY X^T (over B), dX = W^T dY (over C_out)
        hw = g.h * g.w
        xt = {"base": x.base, "lane": [driver.digit(g.w, cb=1), driver.digit(g.h, cb=g.w),
                                       driver.digit(cb=g.batch * hw)],
              "k": [driver.digit(cb=hw), driver.digit(1), driver.digit(1)], "init": {}}
        prog = driver.gemm_program(cfg, g.cout, kk, g.batch, driver.matrix_desc(dy.base, g.batch, 1), xt,
                                   d_addr=dw.base, d_si=kk, out_raw=True, layer="bwd_w")
        if not first:
            dx = img.alloc(f"dx{id(g)}", (kk, g.batch))
            prog += driver.gemm_program(cfg, kk, g.batch, g.cout, driver.matrix_desc(w.base, 1, kk),
                                        driver.matrix_desc(dy.base, 1, g.batch), d_addr=dx.base,
                                        d_si=g.batch, shift=8, layer="bwd_d")
        return prog
    a, b = driver.conv_bwd_weight_descs(g, dy.base, x.base)
    prog = driver.gemm_program(cfg, g.cout, kk, g.batch * g.ho * g.wo, a, b, d_addr=dw.base, d_si=kk,
                               out_raw=True, layer="bwd_w")
    if not first:
        dx = img.alloc(f"dx{id(g)}", (g.cin, g.batch, g.h, g.w))
        a, b = driver.conv_bwd_data_descs(g, dy.base, w.base)
        n = g.batch * g.h * g.w
        prog += driver.gemm_program(cfg, g.cin, n, g.cout * g.kh * g.kw, a, b, d_addr=dx.base, d_si=n,
                                    shift=8, layer="bwd_d")
    return prog


def _predictor_train_programs(cfg, n: int, k: int, img) -> list:
    """The predictor's own training step for one layer's n samples, as GEMMs on the main
    engine (our choice, docs/predictor.md): fc weight gradient dW2 = E^T H (k x F, over n),
    feature gradient dH = E W2 (n x F, over k), conv weight gradient dW1 = dA X^T
    (C x 9, over n*P*P) from the im2col of the samples."""
    from . import driver
    F = cfg.pred_features
    C = cfg.pred_channels
    P2 = cfg.pred_p ** 2
    e = img.alloc(f"pe{id(img)}{img.top}", (n, k))
    h = img.alloc(f"ph{id(img)}{img.top}", (n, F))
    w2 = img.alloc(f"pw2{id(img)}{img.top}", (k, F))
    dw2 = img.alloc(f"pdw2{id(img)}{img.top}", (k, F))
    dh = img.alloc(f"pdh{id(img)}{img.top}", (n, F))
    da = img.alloc(f"pda{id(img)}{img.top}", (C, n * P2))
    xc = img.alloc(f"pxc{id(img)}{img.top}", (9, n * P2))
    dw1 = img.alloc(f"pdw1{id(img)}{img.top}", (C, 9))
    md = driver.matrix_desc
    prog = driver.gemm_program(cfg, k, F, n, md(e.base, 1, k), md(h.base, 1, F), d_addr=dw2.base, d_si=F,
                               out_raw=True, layer="pred_dw2")
    prog += driver.gemm_program(cfg, n, F, k, md(e.base, k, 1), md(w2.base, 1, F), d_addr=dh.base, d_si=F,
                                shift=8, layer="pred_dh")
    prog += driver.gemm_program(cfg, C, 9, n * P2, md(da.base, n * P2, 1), md(xc.base, n * P2, 1),
                                d_addr=dw1.base, d_si=9, out_raw=True, layer="pred_dw1")
    return prog


def _cycles(cfg, prog) -> int:
    from . import cyclemodel as cm
    return sum(cm.instruction_cycles(cfg, ins) + 1 for ins in prog)


def layer_rows(cfg, specs, geoms, net: str) -> tuple[list, dict]:
    """Per-layer rows and the step totals from the models (cyclemodel + predictor_model)."""
    from . import predictor_model as PM
    from .driver import MemoryImage
    img = MemoryImage(cfg.replace(mem_addr_bits=max(cfg.mem_addr_bits, 26)))
    steady = PM.gp_timeline(cfg, specs, STEADY_STEPS)
    prev = PM.gp_timeline(cfg, specs, STEADY_STEPS - 1)
    single = PM.gp_timeline(cfg, specs, 1)
    rows = []
    tot = dict(forward=0, backward=0, pred_train=0)
    for i, (L, g) in enumerate(zip(specs, geoms)):
        fwd = _cycles(cfg, L.instrs)
        bwd_model = "cyclemodel"
        try:
            bwd = _cycles(cfg, _bwd_programs(cfg, g, L.kind, i == 0, img))
        except DriverError:
            # the driver cannot split this backward GEMM for the preset's scratchpads: count
            # the ideal array cycles instead (a lower bound), and say so in the row
            from . import cyclemodel as cm
            kk = g.cin * g.kh * g.kw
            n_out = g.batch * g.ho * g.wo
            bwd = cm.ideal_cycles(cfg, g.cout, kk, n_out)
            if i:
                bwd += cm.ideal_cycles(cfg, g.cin, g.batch * g.h * g.w, g.cout * g.kh * g.kw)
            bwd_model = "ideal (driver cannot split)"
        ptrain = _cycles(cfg, _predictor_train_programs(cfg, L.c_out, L.fan_in, img))
        alone = PM.gp_timeline(cfg, [L], 1)
        tot["forward"] += fwd
        tot["backward"] += bwd
        tot["pred_train"] += ptrain
        rows.append(dict(net=net, layer=L.name, c_out=L.c_out, fan_in=L.fan_in, forward_cycles=fwd,
                         predictor_cycles=alone["run_cycles"] - fwd,
                         array_cycles=alone["array_busy_cycles"],
                         gp_step_cycles=fwd + _layer_gates(cfg, specs, i),
                         backward_cycles=bwd, backward_model=bwd_model, predictor_train_cycles=ptrain,
                         bp_step_cycles=fwd + bwd + ptrain))
    gp_steady = steady["run_cycles"] - prev["run_cycles"]
    total = dict(net=net, layer="step", forward_cycles=tot["forward"],
                 predictor_cycles=sum(r["predictor_cycles"] for r in rows),
                 array_cycles=sum(r["array_cycles"] for r in rows),
                 gp_step_cycles=gp_steady, gp_step_isolated_cycles=single["run_cycles"],
                 backward_cycles=tot["backward"], predictor_train_cycles=tot["pred_train"],
                 bp_step_cycles=tot["forward"] + tot["backward"] + tot["pred_train"],
                 gp_over_forward=round(gp_steady / tot["forward"], 4),
                 gp_saves_cycles=tot["forward"] + tot["backward"] + tot["pred_train"] - gp_steady)
    return rows, total


def _layer_gates(cfg, specs, i: int) -> int:
    """Fence cycles in front of layer i in the steady-state (last) GP step."""
    from . import predictor_model as PM
    a = PM.gp_timeline(cfg, specs, STEADY_STEPS, gates_per_layer=True)["gates"]
    return a[(STEADY_STEPS - 1) * len(specs) + i]


def larger_net(cfg, batch: int = 32):
    """A CIFAR-sized CNN's layer shapes (analytic rows): conv 3->32 3x3 (32x32),
    conv 32->64 s2 (16x16), conv 64->64 s2 (8x8), fc 4096->10."""
    from . import driver
    from .driver import ConvGeom, MemoryImage
    from . import predictor_model as PM
    big = cfg.replace(name=cfg.name + "-cifar", mem_addr_bits=max(cfg.mem_addr_bits, 23), pred_kmax=4096)
    img = MemoryImage(big)
    geoms = [("conv1", "conv", ConvGeom(batch, 3, 32, 32, 32, 3, 3, 1, 1)),
             ("conv2", "conv", ConvGeom(batch, 32, 32, 32, 64, 3, 3, 2, 1)),
             ("conv3", "conv", ConvGeom(batch, 64, 16, 16, 64, 3, 3, 2, 1)),
             ("fc", "linear", ConvGeom(batch, 64, 8, 8, 10, 8, 8, 1, 0))]
    specs = []
    for name, kind, g in geoms:
        x = img.alloc("x_" + name, (g.cin, g.batch, g.h, g.w))
        w = img.alloc("w_" + name, (g.cout, g.cin * g.kh * g.kw))
        y = img.alloc("y_" + name, (g.cout, g.batch, g.ho, g.wo))
        a, b = driver.conv_fwd_descs(g, x.base, w.base)
        n = g.batch * g.ho * g.wo
        prog = driver.gemm_program(big, g.cout, n, g.cin * g.kh * g.kw, a, b, d_addr=y.base, d_si=n,
                                   shift=8, relu=kind == "conv", layer=name)
        specs.append(PM.LayerSpec(name, kind, g.cout, g.cin * g.kh * g.kw, prog))
    return big, specs, [g for _, _, g in geoms]


def bench(sim_name: str = "verilator", batch: int = 32, emit=print, larger: bool = True) -> list:
    """Digits CNN rows simulated on the RTL (bit-exact + counters == model checked) and
    the larger network's rows from the models."""
    from rtl.config import preset
    from . import accel_sim as AS
    from . import predictor_model as PM
    cfg = preset("default")
    cap = capture_digits(steps=6, batch=batch)
    out = []
    with AS.AccelSim(cfg, sim_name) as sim:
        run1 = AS.gp_program(cfg, cap, steps=1, g_shift_override=0)
        rep1 = AS.run_gp(sim, run1)
        gold = AS.gp_golden(run1, cap)["steps"][0]
        exact = {}
        for Ld in run1.layers:
            t = run1.img.tensors["w16_" + Ld["name"]]
            w16 = sim.dump(t.base, t.base + t.size).reshape(t.shape)
            ty = run1.img.tensors["y_" + Ld["name"]]
            y = sim.dump(ty.base, ty.base + ty.size).reshape(ty.shape)
            want_y = gold[Ld["name"]]["y"]
            want_y = want_y.transpose(1, 0, 2, 3) if want_y.ndim == 4 else want_y.T.reshape(y.shape)
            exact[Ld["name"]] = bool(np.array_equal(Ld["cap"].w_master.reshape(w16.shape) - w16,
                                                    gold[Ld["name"]]["pred"]) and np.array_equal(y, want_y))
        runs = {s: AS.gp_program(cfg, cap, steps=s) for s in (1, STEADY_STEPS - 1, STEADY_STEPS)}
        reps = {s: AS.run_gp(sim, r) for s, r in runs.items()}
    specs = PM.specs_from_run(run1)
    match = all(PM.gp_timeline(cfg, specs, s)["run_cycles"] == reps[s]["run_cycles"] and
                PM.gp_timeline(cfg, specs, s)["gate_cycles"] == reps[s]["counters"]["gate_cycles"]
                for s in reps)
    match &= PM.gp_timeline(cfg, specs, 1)["run_cycles"] == rep1["run_cycles"]
    rows, total = layer_rows(cfg, specs, [Ld["geom"] for Ld in run1.layers], "digits-cnn")
    for r in rows:
        r.update(bit_exact=exact[r["layer"]], simulated=True, cycles_match_model=match)
    gp_rtl = reps[STEADY_STEPS]["run_cycles"] - reps[STEADY_STEPS - 1]["run_cycles"]
    total.update(bit_exact=all(exact.values()), simulated=True, cycles_match_model=match,
                 gp_step_cycles_rtl=gp_rtl, gp_step_isolated_cycles_rtl=reps[1]["run_cycles"])
    for r in rows + [total]:
        r.update(preset=cfg.name, batch=batch)
        emit(r)
        out.append(r)
    if larger:
        big, bspecs, bgeoms = larger_net(cfg, batch)
        brows, btotal = layer_rows(big, bspecs, bgeoms, "cifar-cnn (shapes)")
        for r in brows + [btotal]:
            r.update(bit_exact=None, simulated=False, cycles_match_model=None, preset=big.name, batch=batch)
            emit(r)
            out.append(r)
    return out


def table_printer():
    cols = ["net", "layer", "forward_cycles", "predictor_cycles", "gp_step_cycles", "bp_step_cycles",
            "bit_exact", "simulated"]
    state = {"header": False}

    def emit(row):
        if not state["header"]:
            print("  ".join(f"{c:>18}" for c in cols))
            state["header"] = True
        print("  ".join(f"{str(row.get(c)):>18}" for c in cols), flush=True)
    return emit
