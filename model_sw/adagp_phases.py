"""ADA-GP phase controller: which step is back-propagation (BP) and which is GP.

Schedules
---------
``bp``        every step is BP (the baseline).
``adaptive``  warm-up of ``warmup`` BP steps, then cycles of a BP phase of
              ``n_bp`` steps followed by a GP phase of ``n_gp`` steps, where
              ``n_gp`` is decided at the end of every BP phase from the predictor
              quality measured in that phase (the rule below).
``fixed``     warm-up, then cycles of ``fixed_bp`` BP steps and ``fixed_gp`` GP steps.
``always``    warm-up, then GP forever (synthetic-gradient style: the predictor
              stops learning when the true gradients stop).

Adaptive rule (the paper does not publish its rule; this one is ours)
--------------------------------------------------------------------
During a BP phase the predictor predicts every layer's gradient *before* it is
trained on the true one; q = min over layers of the mean cosine similarity
between predicted and true gradient over the phase's BP steps.
    q >= theta_up            -> n_gp = min(2 * n_gp, n_gp_max)   (at least 1)
    theta_down <= q < theta_up -> n_gp unchanged
    q <  theta_down          -> n_gp = n_gp // 2                 (0: BP only until q recovers)
The decision and q are logged on every step (``log``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

SCHEDULES = ("bp", "adaptive", "fixed", "always")


@dataclass
class PhaseConfig:
    schedule: str = "adaptive"
    warmup: int = 84           # BP steps before the first GP step
    n_bp: int = 2              # BP phase length (adaptive)
    n_gp0: int = 2             # first GP phase length (adaptive)
    n_gp_max: int = 8
    theta_up: float = 0.1
    theta_down: float = 0.0
    fixed_bp: int = 1
    fixed_gp: int = 3
    quality: str = "mean"      # how layers combine into q: "min" or "mean" over layers

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        for k in ("warmup", "n_gp0", "fixed_gp"):
            if getattr(self, k) < 0:
                raise ValueError(f"{k}={getattr(self, k)} must be >= 0")
        for k in ("n_bp", "n_gp_max", "fixed_bp"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k}={getattr(self, k)} must be >= 1")
        if self.quality not in ("min", "mean"):
            raise ValueError(f"quality={self.quality!r}: choose min or mean")
        if not (-1.0 <= self.theta_down <= self.theta_up <= 1.0):
            raise ValueError(f"need -1 <= theta_down ({self.theta_down}) <= theta_up ({self.theta_up}) <= 1")


@dataclass
class PhaseController:
    cfg: PhaseConfig
    step: int = 0
    n_gp: int = 0
    log: list = field(default_factory=list)
    _left: int = 0             # steps left in the current phase
    _phase: str = "warmup"     # warmup | bp | gp
    _cos: list = field(default_factory=list)  # per-BP-step {layer: cos} of this phase
    _last_q: float | None = None

    def __post_init__(self):
        self.n_gp = self.cfg.n_gp0
        self._phase = "warmup" if self.cfg.warmup > 0 else "bp"
        self._left = self.cfg.warmup if self.cfg.warmup > 0 else self._bp_len()
        if self.cfg.schedule == "bp":
            self._phase, self._left = "bp", 1 << 62
        elif self.cfg.schedule == "always" and self.cfg.warmup == 0:
            self._phase, self._left = "gp", 1 << 62

    def _bp_len(self) -> int:
        return self.cfg.fixed_bp if self.cfg.schedule == "fixed" else self.cfg.n_bp

    @property
    def phase(self) -> str:
        """'warmup', 'bp' or 'gp' for the current step."""
        return self._phase

    @property
    def is_gp(self) -> bool:
        return self._phase == "gp"

    def record_cos(self, cos: dict[str, float]):
        """Report the per-layer cosine similarities measured on this (BP) step."""
        if self.is_gp:
            raise RuntimeError(f"step {self.step}: cosine similarity reported during a GP step")
        self._cos.append(dict(cos))

    def _decide(self) -> str:
        """End of a BP phase (adaptive): set n_gp from q; returns the decision."""
        if not self._cos:
            return "keep (no measurement)"
        names = self._cos[0].keys()
        per_layer = [sum(c[n] for c in self._cos) / len(self._cos) for n in names]
        q = min(per_layer) if self.cfg.quality == "min" else sum(per_layer) / len(per_layer)
        self._last_q = q
        if q >= self.cfg.theta_up:
            self.n_gp = min(max(2 * self.n_gp, 1), self.cfg.n_gp_max)
            return "grow"
        if q < self.cfg.theta_down:
            self.n_gp = self.n_gp // 2
            return "shrink"
        return "keep"

    def advance(self, **info):
        """Close the current step (logging ``info``) and move to the next one."""
        entry = dict(step=self.step, phase=self._phase, n_gp=self.n_gp, **info)
        self._left -= 1
        if self._left <= 0:
            entry.update(self._switch())
        self.log.append(entry)
        self.step += 1

    def _switch(self) -> dict:
        s = self.cfg.schedule
        ended = self._phase
        out = {}
        if s == "always":
            self._phase, self._left = "gp", 1 << 62
        elif ended in ("warmup", "gp"):
            self._phase, self._left = "bp", self._bp_len()
            if s == "adaptive" and ended == "warmup":
                self._cos.clear()  # the first BP phase after warm-up measures afresh
        else:  # a BP phase ended
            if s == "adaptive":
                out["decision"] = self._decide()
                out["q"] = self._last_q
                n = self.n_gp
            else:
                n = self.cfg.fixed_gp
            self._cos.clear()
            if n > 0:
                self._phase, self._left = "gp", n
            else:
                self._phase, self._left = "bp", self._bp_len()
        return out
