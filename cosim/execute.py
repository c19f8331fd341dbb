"""Run a program on the RTL and on the golden model and check everything:
memory bit for bit (first mismatch reported with its tensor, index, expected
and got) and the RTL's busy-cycle counter against the analytic cycle model."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from rtl import isa
from rtl.config import AcceleratorConfig
from . import cyclemodel, golden
from .driver import MemoryImage
from .rtlsim import PMAX, RtlSim


class MismatchError(AssertionError):
    """The RTL disagrees with the golden model (data or cycles)."""


@dataclass
class RunResult:
    counters: dict
    model_cycles: int
    error: int
    wall_s: float
    sim_wall_s: float
    zero_lanes: int = 0       # zero-write lanes the memory model accepted (ocompact)


def golden_run(cfg: AcceleratorConfig, img: MemoryImage, prog: list[dict]) -> tuple[np.ndarray, int]:
    mem = img.mem.copy()
    acc = np.zeros((cfg.acc_words, cfg.cols), dtype=np.int64)
    err = 0
    for ins in prog:
        code = golden.execute(cfg, ins, mem, acc)
        err = err or code
    return mem, err


def locate(img: MemoryImage, index: int) -> str:
    for t in img.tensors.values():
        if t.base <= index < t.base + t.size:
            return f"{t.name}{[int(i) for i in np.unravel_index(index - t.base, t.shape)]}"
    return f"slot {index}"


def compare(img: MemoryImage, want: np.ndarray, got: np.ndarray, what: str):
    bad = np.nonzero(want != got)[0]
    if len(bad):
        i = int(bad[0])
        raise MismatchError(f"{what}: {len(bad)} slots differ; first at {locate(img, i)}: "
                            f"expected {int(want[i])}, got {int(got[i])}")


def run_checked(sim: RtlSim, cfg: AcceleratorConfig, img: MemoryImage, prog: list[dict], *,
                what: str = "program", stall_prob: int = 0, stall_seed: int = 1,
                fault_addr: int | None = None, check_cycles: bool = True,
                golden_post=None) -> RunResult:
    """Run ``prog`` on the RTL from ``img`` and check it; updates ``img.mem`` to the result.
    ``golden_post(mem)`` adds to the golden result what runs after the program in the
    same simulator run (the weight-update unit's work; its streams are loaded by the
    caller, and the program must then fit one part)."""
    t0 = time.perf_counter()
    want, gerr = golden_run(cfg, img, prog)
    if golden_post is not None:
        if len(prog) > PMAX:
            raise ValueError(f"a program with work after it must fit one part ({len(prog)} > {PMAX} instructions)")
        golden_post(want)
    model = cyclemodel.program_cycles(cfg, prog, img.mem)
    sim.load_mem(img.mem, 0, img.top)
    counters, sim_wall, err, zero_lanes = {}, 0.0, 0, 0
    for start in range(0, len(prog), PMAX):
        part = prog[start:start + PMAX]
        sim.load_program([isa.encode(cfg, ins) for ins in part])
        # watchdog budget: the whole program's modelled cycles bound any part's
        budget = 4 * model + 10_000
        if stall_prob:
            budget *= 1 + 4 * stall_prob // 16
        rep = sim.run(len(part), budget, stall_prob=stall_prob, stall_seed=stall_seed,
                      fault_addr=fault_addr)
        sim_wall += rep["wall_s"]
        err = err or rep["error"]
        for k, v in rep["counters"].items():
            counters[k] = counters.get(k, 0) + v
        zero_lanes += rep["zero_lanes"]
    got = sim.dump(0, img.top)
    compare(img, want[:img.top], got, what)
    if err != gerr:
        raise MismatchError(f"{what}: engine error status {err} ({isa.ERROR_NAMES.get(err)}), "
                            f"golden expects {gerr} ({isa.ERROR_NAMES.get(gerr)})")
    if check_cycles and not stall_prob and counters["busy_cycles"] != model:
        raise MismatchError(f"{what}: busy_cycles {counters['busy_cycles']} != cycle model {model}")
    img.mem[:img.top] = got
    return RunResult(counters, model, err, time.perf_counter() - t0, sim_wall, zero_lanes)
