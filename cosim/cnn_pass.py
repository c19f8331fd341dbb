"""One forward and backward pass of the digits CNN (model_sw.models.CNN) with every
convolution and the classifier computed by the engine (golden model or RTL), in
8-bit operands with per-tensor power-of-two scales.

Per-tensor scales are calibrated from the PyTorch fp32 pass of the same model on
the same (dequantized) inputs.  The host does only what the engine does not:
the softmax cross-entropy gradient of the logits.  The ReLU masks come from the
engine's forward epilogue and the backward-data convolutions apply them in their
own epilogue (``omask``): dL/d(pre-activation) = dL/d(activation) * mask is what
they write.  With ``sparse`` they compute only the output columns (pixels) that
some channel of the instruction needs (``ocompact``) and the backward-weight GEMMs
skip the K steps whose masked-gradient word is all zero (``compact_a``); see
docs/sparsity.md.

The classifier runs as a convolution whose kernel covers the whole 4x4 map, so
activations stay in the engine's [C, B, H, W] layout end to end.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from model_sw import numerics as nx
from rtl.config import AcceleratorConfig
from . import driver
from .driver import ConvGeom, MemoryImage

BITS = 8


@dataclass
class Op:
    layer: str
    kind: str          # fwd, bwd_data, bwd_weight
    prog: list
    out: str           # result tensor name
    shape: tuple = ()
    updates: list = field(default_factory=list)   # weight-update descriptors run after the program


@dataclass
class CnnPass:
    cfg: AcceleratorConfig
    model: torch.nn.Module
    x: torch.Tensor            # (B, 1, 8, 8)
    y: torch.Tensor            # (B,)
    img: MemoryImage = None
    frac: dict = field(default_factory=dict)
    ref: dict = field(default_factory=dict)
    sparse: bool = False       # zero-word skipping (compact_a) in the backward pass
    mean_loss: bool = False    # gradients of the mean loss over the batch (else of the sum)
    dw_int8: bool = False      # weight gradients requantized to int8 (what the update unit reads), else raw int32

    def __post_init__(self):
        self.img = MemoryImage(self.cfg)
        self.batch = self.x.shape[0]
        m = self.model
        self.geoms = {
            "conv1": ConvGeom(self.batch, 1, 8, 8, m.conv1.out_channels, 3, 3, 1, 1),
            "conv2": ConvGeom(self.batch, m.conv1.out_channels, 8, 8, m.conv2.out_channels, 3, 3, 2, 1),
            "fc": ConvGeom(self.batch, m.conv2.out_channels, 4, 4, m.fc.out_features, 4, 4, 1, 0),
        }
        self._reference()

    # ---- PyTorch fp32 reference (also calibrates the scales) -------------------
    def _reference(self):
        m = self.model
        q = {}
        fx = nx.choose_frac_bits(self.x, BITS)
        q["x"] = nx.quantize(self.x, fx, BITS)
        self.frac["x"] = fx
        for name, w in (("conv1", m.conv1.weight), ("conv2", m.conv2.weight),
                        ("fc", m.fc.weight.view(m.fc.out_features, -1, 4, 4))):
            f = nx.choose_frac_bits(w, BITS)
            self.frac["w_" + name] = f
            q["w_" + name] = nx.quantize(w, f, BITS)
        ws = {k: nx.dequantize(v, self.frac[k]).requires_grad_(True) for k, v in q.items() if k != "x"}
        x = nx.dequantize(q["x"], fx)
        a1 = F.conv2d(x, ws["w_conv1"], padding=1)
        h1 = torch.relu(a1)
        a2 = F.conv2d(h1, ws["w_conv2"], stride=2, padding=1)
        h2 = torch.relu(a2)
        logits = F.conv2d(h2, ws["w_fc"]).flatten(1)
        for t in (a1, h1, a2, h2, logits):
            t.retain_grad()
        loss = F.cross_entropy(logits, self.y, reduction="mean" if self.mean_loss else "sum")
        loss.backward()
        self.q = q
        self.ref = {"h1": h1.detach(), "h2": h2.detach(), "logits": logits.detach(),
                    "g_logits": logits.grad.detach(), "g_h2": h2.grad.detach(), "g_h1": h1.grad.detach(),
                    "dw_fc": ws["w_fc"].grad.detach(), "dw_conv2": ws["w_conv2"].grad.detach(),
                    "dw_conv1": ws["w_conv1"].grad.detach()}
        for k in ("h1", "h2", "logits", "g_logits", "g_h2", "g_h1", "dw_fc", "dw_conv2", "dw_conv1"):
            self.frac[k] = nx.choose_frac_bits(self.ref[k], BITS)

    # ---- programs ----------------------------------------------------------------
    def _cnhw(self, t: torch.Tensor) -> np.ndarray:
        return t.permute(1, 0, 2, 3).numpy()

    def forward_ops(self) -> list[Op]:
        img, f = self.img, self.frac
        img.put("x", self._cnhw(self.q["x"]))
        for name in ("conv1", "conv2", "fc"):
            img.put("w_" + name, self.q["w_" + name].numpy())
        ops = []
        src, fsrc = "x", f["x"]
        for name, out in (("conv1", "h1"), ("conv2", "h2")):
            g = self.geoms[name]
            y = img.alloc(out, (g.cout, g.batch, g.ho, g.wo))
            mk = img.alloc("mask_" + out, (g.cout, g.batch, g.ho, g.wo))
            a, b = driver.conv_fwd_descs(g, img.tensors[src].base, img.tensors["w_" + name].base)
            n = g.batch * g.ho * g.wo
            shift = nx.requant_shift(fsrc, f["w_" + name], f[out])
            ops.append(Op(name, "fwd", driver.gemm_program(
                self.cfg, g.cout, n, g.cin * g.kh * g.kw, a, b, d_addr=y.base, d_si=n, shift=shift,
                relu=True, mask_addr=mk.base, mask_si=n, layer=name), out))
            src, fsrc = out, f[out]
        g = self.geoms["fc"]
        lg = img.alloc("logits", (g.cout, g.batch))
        a, b = driver.conv_fwd_descs(g, img.tensors["h2"].base, img.tensors["w_fc"].base)
        ops.append(Op("fc", "fwd", driver.gemm_program(
            self.cfg, g.cout, g.batch, g.cin * 16, a, b, d_addr=lg.base, d_si=g.batch, out_raw=True,
            layer="fc"), "logits"))
        return ops

    def logits(self) -> torch.Tensor:
        raw = self.img.get("logits").T
        return nx.dequantize(torch.from_numpy(raw), self.frac["h2"] + self.frac["w_fc"])

    def put_logit_grad(self):
        """Host: softmax cross-entropy gradient of the engine's logits, quantized."""
        lg = self.logits()
        g = torch.softmax(lg, dim=1) - F.one_hot(self.y, lg.shape[1]).float()
        if self.mean_loss:
            g = g / self.batch
        self.img.put("g_logits", nx.quantize(g, self.frac["g_logits"], BITS).numpy().T.copy())

    def _bwd(self, name: str, g_out: str, act_in: str, g_in: str | None) -> list[Op]:
        img, f = self.img, self.frac
        g = self.geoms[name]
        ops = []
        dw = img.alloc("dw_" + name, (g.cout, g.cin, g.kh, g.kw))
        kk = g.cin * g.kh * g.kw
        a, b = driver.conv_bwd_weight_descs(g, img.tensors[g_out].base, img.tensors[act_in].base)
        # A = the gradient; after a ReLU it was masked by the engine and has zero words
        masked = "mask_" + g_out[2:] in img.tensors
        # int8 dW never finer than the product (the engine only shifts right)
        f["dw_" + name] = min(f["dw_" + name], f[g_out] + f[act_in])
        dw_fmt = (dict(shift=nx.requant_shift(f[g_out], f[act_in], f["dw_" + name])) if self.dw_int8
                  else dict(out_raw=True))
        ops.append(Op(name, "bwd_weight", driver.gemm_program(
            self.cfg, g.cout, kk, g.batch * g.ho * g.wo, a, b, d_addr=dw.base, d_si=kk,
            compact_a=self.sparse and masked, layer=name, **dw_fmt), "dw_" + name))
        if g_in is not None:
            dx = img.alloc(g_in, (g.cin, g.batch, g.h, g.w))
            a, b = driver.conv_bwd_data_descs(g, img.tensors[g_out].base, img.tensors["w_" + name].base)
            n = g.batch * g.h * g.w
            shift = nx.requant_shift(f[g_out], f["w_" + name], f[g_in])
            mk = img.tensors["mask_" + act_in]       # the forward ReLU mask of act_in
            ops.append(Op(name, "bwd_data", driver.gemm_program(
                self.cfg, g.cin, n, g.cout * g.kh * g.kw, a, b, d_addr=dx.base, d_si=n, shift=shift,
                om_addr=mk.base, om_si=n, om_sj=1, ocompact=self.sparse, layer=name), g_in))
        return ops

    def backward_stages(self):
        """Programs of the backward pass, each with its host step (none left: the
        engine applies the ReLU masks itself; kept so callers need not change)."""
        nothing = lambda: None   # noqa: E731
        return [
            (self._bwd("fc", "g_logits", "h2", "g_h2"), nothing),
            (self._bwd("conv2", "g_h2", "h1", "g_h1"), nothing),
            (self._bwd("conv1", "g_h1", "x", None), nothing),
        ]

    # ---- comparison with PyTorch -----------------------------------------------------
    def engine_values(self) -> dict:
        f, img = self.frac, self.img
        d = lambda t, fr: nx.dequantize(torch.from_numpy(t), fr)
        out = {"h1": d(img.get("h1"), f["h1"]).permute(1, 0, 2, 3),
               "h2": d(img.get("h2"), f["h2"]).permute(1, 0, 2, 3),
               "logits": self.logits()}
        for name, gin in (("fc", "g_logits"), ("conv2", "g_h2"), ("conv1", "g_h1")):
            src = {"fc": "h2", "conv2": "h1", "conv1": "x"}[name]
            out["dw_" + name] = d(img.get("dw_" + name), f["dw_" + name] if self.dw_int8 else f[gin] + f[src])
        return out

    def errors_vs_torch(self) -> dict:
        """Per tensor: max |engine - torch| / max |torch| (the stated tolerance metric)."""
        eng = self.engine_values()
        errs = {}
        for k, v in eng.items():
            r = self.ref[k].reshape(v.shape)
            errs[k] = float((v - r).abs().max() / r.abs().max().clamp_min(1e-12))
        return errs
