"""Stream payloads between the predictor-side units (the contract shared by the
tensor-reorganization unit, the predictor MAC array and the weight-update unit).

    engine.wr (tap) --> ReorgUnit --samples--> PredictorArray --grad rows--> (memory / update)

A *sample* is one predictor input (1 x P x P int8, read as q * 2**-7) for one
output channel of the layer just computed.  A *gradient row* is a slice of
``pred_cols`` int8 predicted (normalized) weight-gradient values of one channel.
"""
from amaranth import signed, unsigned
from amaranth.lib import data

from rtl.config import AcceleratorConfig

PRED_OP_BITS = 8


def sample_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    """One predictor sample per beat; ``last`` marks the layer's last channel."""
    return data.StructLayout({
        "pix": data.ArrayLayout(signed(PRED_OP_BITS), cfg.pred_p * cfg.pred_p),  # row-major P x P
        "channel": unsigned(cfg.dim_bits),   # output channel this sample stands for
        "last": unsigned(1),
    })


def grad_row_layout(cfg: AcceleratorConfig) -> data.StructLayout:
    """``pred_cols`` predicted gradient values of one channel, starting at fan-in index ``col``.
    Lanes at or beyond the layer's fan-in are masked (``en`` clear, data 0)."""
    return data.StructLayout({
        "data": data.ArrayLayout(signed(PRED_OP_BITS), cfg.pred_cols),
        "en": unsigned(cfg.pred_cols),
        "channel": unsigned(cfg.dim_bits),
        "col": unsigned(cfg.dim_bits),
        "last": unsigned(1),                 # last row of the layer
    })
