"""The single source of truth: one frozen configuration drives RTL generation, the
golden model, the cycle model and the testbenches (Gemmini's idea).

Named presets derive from the base by ``dataclasses.replace``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from model_sw.numerics import SUPPORTED_OP_BITS, acc_bits_needed, max_k


class ConfigError(ValueError):
    """An accelerator configuration that cannot be built."""


@dataclass(frozen=True)
class AcceleratorConfig:
    name: str = "custom"
    rows: int = 8                 # R: systolic array rows (output rows of a tile, M direction)
    cols: int = 8                 # C: systolic array columns (N direction)
    op_bits: int = 8              # signed operand width
    acc_bits: int = 32            # signed accumulator width
    spad_a_words: int = 1024      # scratchpad A depth, words of `rows` operands (one bank)
    spad_b_words: int = 1024      # scratchpad B depth, words of `cols` operands (one bank)
    acc_words: int = 256          # accumulator SRAM depth, rows of `cols` accumulators
    mem_addr_bits: int = 18       # external memory: 2**bits element slots (see slot_bits)
    dram_latency: int = 2         # read latency of the (testbench) external memory, cycles
    dim_bits: int = 16            # width of the M, N, K and geometry fields
    dataflow: str = "os"          # output-stationary (the only dataflow built so far)
    # --- engine options (the defaults are the full engine; `ice40` turns them down) ---
    counter_bits: int = 48        # width of each performance counter (they wrap)
    all_counters: bool = True     # False: only rtl.engine.CORE_COUNTERS (busy/compute/stall
                                  # cycles, MACs, retired, errors)
    sparse: bool = True           # omask / compact_a / ocompact built (side memory, mask reader,
                                  # panel-info ring, zero writes); False: fields absent, refused
    relu_mask: bool = True        # the 1-bit ReLU-mask write beside D (write_mask); False:
                                  # fields absent, refused (the mask is D > 0: host side)
    conv: bool = True             # convolution addressing built (3-digit gather counters with
                                  # sp/y/x vectors, geometry and dilation); False: matrices only
    fmax_logic: bool = True       # area for Fmax in the engine: one-hot shift selects, flags kept
                                  # as registers beside their counters, private register copies;
                                  # False: the plain forms, same cycles (`ice40`: area-bound)
    # --- ADA-GP predictor side (predictor_hw/) -------------------------------
    pred_rows: int = 4            # predictor MAC array rows
    pred_cols: int = 4            # predictor MAC array columns
    pred_p: int = 4               # predictor input side: one sample is 1 x P x P (model_sw PredictorConfig.p)
    pred_channels: int = 8        # predictor conv output channels (PredictorConfig.channels)
    pred_pool: int = 2            # predictor average pool (PredictorConfig.pool)
    pred_kmax: int = 256          # predictor fc outputs: the largest layer fan-in it serves
    pred_max_cout: int = 64       # most output channels (samples) of one layer the reorg unit holds

    def __post_init__(self):
        self.validate()

    # --- derived quantities -------------------------------------------------
    @property
    def lanes_a(self) -> int:
        """Elements per external read beat on the A port (one scratchpad-A word)."""
        return self.rows

    @property
    def lanes_b(self) -> int:
        return self.cols

    @property
    def op_bytes(self) -> int:
        return (self.op_bits + 7) // 8

    @property
    def acc_bytes(self) -> int:
        return (self.acc_bits + 7) // 8

    @property
    def max_k(self) -> int:
        """Largest K one instruction can reach: a panel of K words must fit a scratchpad."""
        return min(self.spad_a_words, self.spad_b_words)

    @property
    def mem_words(self) -> int:
        return 1 << self.mem_addr_bits

    @property
    def spad_kib(self) -> float:
        return (self.spad_a_words * self.rows + self.spad_b_words * self.cols) * self.op_bytes / 1024

    @property
    def acc_kib(self) -> float:
        return self.acc_words * self.cols * self.acc_bytes / 1024

    @property
    def bus_bits(self) -> int:
        """Read bus width of one operand port, in bits (lanes x 32-bit slots)."""
        return max(self.rows, self.cols) * self.slot_bits

    @property
    def drain_period(self) -> int:
        """Minimum cycles between two tiles' first steps: the drain chain of a column
        needs 2R-1 cycles to move a tile's R results out before the next capture."""
        return 2 * self.rows - 1

    # --- checks ---------------------------------------------------------------
    def validate(self):
        def bad(field, why):
            raise ConfigError(f"{self.name}: {field}={getattr(self, field)!r}: {why}")

        for f in ("rows", "cols"):
            v = getattr(self, f)
            if not isinstance(v, int) or v < 1 or v > 64 or v & (v - 1):
                bad(f, "array dimension must be a power of two in 1..64 (tile counts are shifts)")
        if self.op_bits not in SUPPORTED_OP_BITS:
            bad("op_bits", f"supported operand widths are {SUPPORTED_OP_BITS}")
        if not 2 * self.op_bits <= self.acc_bits <= 64:
            bad("acc_bits", f"must be in {2 * self.op_bits}..64")
        for f in ("spad_a_words", "spad_b_words", "acc_words"):
            v = getattr(self, f)
            if v < 1 or v & (v - 1):
                bad(f, "SRAM depths must be powers of two")
        if not 10 <= self.mem_addr_bits <= 30:
            bad("mem_addr_bits", "must be in 10..30")
        if not 1 <= self.dram_latency <= 16:
            bad("dram_latency", "must be in 1..16")
        if not 16 <= self.counter_bits <= 64 or self.counter_bits % 8:
            bad("counter_bits", "must be a whole number of bytes in 16..64 (the host reads bytes)")
        for f in ("sparse", "conv", "all_counters", "relu_mask", "fmax_logic"):
            if not isinstance(getattr(self, f), bool):
                bad(f, "must be True or False")
        if self.dataflow != "os":
            bad("dataflow", "only output-stationary ('os') is built")
        for f in ("pred_rows", "pred_cols"):
            v = getattr(self, f)
            if v < 1 or v > 16 or v & (v - 1):
                bad(f, "predictor array dimension must be a power of two in 1..16")
        if self.pred_pool < 1 or (self.pred_pool ** 2) & (self.pred_pool ** 2 - 1):
            bad("pred_pool", "pool^2 must be a power of two (the pool divide is a shift)")
        if self.pred_p < 1 or self.pred_p % self.pred_pool:
            bad("pred_p", f"must be a positive multiple of pred_pool={self.pred_pool}")
        if not 1 <= self.pred_channels <= 64:
            bad("pred_channels", "must be in 1..64")
        if not 1 <= self.pred_kmax < 1 << self.dim_bits:
            bad("pred_kmax", f"must be in 1..{(1 << self.dim_bits) - 1}")
        if self.pred_max_cout < 1 or self.pred_max_cout & (self.pred_max_cout - 1):
            bad("pred_max_cout", "must be a power of two (it sizes an SRAM)")
        if self.max_k >= 1 << self.dim_bits:
            bad("dim_bits", "too narrow for the scratchpad depth")
        # No reachable K may overflow the accumulator (checked here, once).
        need = acc_bits_needed(self.op_bits, self.max_k)
        if need > self.acc_bits:
            bad("acc_bits", f"K can reach {self.max_k} (scratchpad depth) and int{self.op_bits} "
                            f"products need {need} accumulator bits (max K for {self.acc_bits} bits "
                            f"is {max_k(self.op_bits, self.acc_bits)})")

    @property
    def slot_bits(self) -> int:
        """Width of one external-memory element slot: it must hold a raw accumulator."""
        return 32 if self.acc_bits <= 32 else 64

    @property
    def pred_features(self) -> int:
        """Predictor fc fan-in: channels x (P/pool)^2 (model_sw PredictorConfig.features)."""
        return self.pred_channels * (self.pred_p // self.pred_pool) ** 2

    def replace(self, **kw) -> "AcceleratorConfig":
        return dataclasses.replace(self, **kw)


BASE = AcceleratorConfig(name="default")
# The smallest full engine: 2x2 PEs, narrow dimension fields (more than an iCE40 UP5K
# holds: `ice40` below is its lite variant).
TINY = BASE.replace(name="tiny", rows=2, cols=2, spad_a_words=128, spad_b_words=128,
                    acc_words=32, mem_addr_bits=10, dim_bits=8,
                    pred_rows=2, pred_cols=2, pred_kmax=128, pred_max_cout=16)

PRESETS: dict[str, AcceleratorConfig] = {
    "small": BASE.replace(name="small", rows=4, cols=4, spad_a_words=512, spad_b_words=512,
                          acc_words=128, mem_addr_bits=16),
    "default": BASE,
    "large": BASE.replace(name="large", rows=16, cols=16, spad_a_words=1024, spad_b_words=1024,
                          acc_words=512, mem_addr_bits=20),
    # 16-bit operands need a 48-bit accumulator (and 64-bit memory slots for raw results).
    "wide16": BASE.replace(name="wide16", rows=4, cols=4, op_bits=16, acc_bits=48,
                           spad_a_words=512, spad_b_words=512, acc_words=128, mem_addr_bits=16),
    "tiny": TINY,
    # The engine alone on an iCE40 UP5K (iCEBreaker): tiny with one PE (1x1), without the
    # sparse modes and the convolution addressing (dense GEMMs, transposes, split K),
    # without the ReLU-mask write, six 16-bit counters (they wrap) and 24-bit accumulators
    # (enough for K <= 128 = the scratchpad depth).  What each option saves: docs/fpga.md,
    # "iCE40: the `ice40` preset"; why 1x1 and 16 bits (it was 2x1 with 24-bit counters
    # until the engine's Fmax forms outgrew the UP5K's placeable 86 %): "Fmax round 15".
    "ice40": TINY.replace(name="ice40", rows=1, cols=1, acc_bits=24, counter_bits=16, all_counters=False,
                          sparse=False, conv=False, relu_mask=False, fmax_logic=False),
}


def preset(name: str) -> AcceleratorConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
