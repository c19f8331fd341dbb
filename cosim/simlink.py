"""A UART link for Amaranth's simulator: drives an ``rx`` pin and samples a ``tx`` pin
bit by bit (8N1, ``divisor`` clocks per bit), for ``cosim.host.Host`` in tests."""
from __future__ import annotations

from .host import LinkTimeout


class AmaranthUARTLink:
    def __init__(self, ctx, rx, tx, divisor: int, timeout_cycles: int = 200_000,
                 stop_bit: int = 1):
        self.ctx, self.rx, self.tx, self.div = ctx, rx, tx, divisor
        self.timeout = timeout_cycles
        self.stop_bit = stop_bit          # 0 sends a framing error (a test of the receiver)

    async def write(self, data: bytes) -> None:
        for byte in data:
            bits = [0] + [(byte >> i) & 1 for i in range(8)] + [self.stop_bit]
            for b in bits:
                self.ctx.set(self.rx, b)
                await self.ctx.tick().repeat(self.div)
            if self.stop_bit == 0:       # return to idle so the next start bit is seen
                self.ctx.set(self.rx, 1)
                await self.ctx.tick().repeat(self.div)
        self.ctx.set(self.rx, 1)

    async def read_byte(self) -> int:
        waited = 0
        while self.ctx.get(self.tx):
            await self.ctx.tick()
            waited += 1
            if waited > self.timeout:
                raise LinkTimeout(f"no start bit on tx within {self.timeout} cycles")
        await self.ctx.tick().repeat(self.div // 2)
        if self.ctx.get(self.tx):
            raise LinkTimeout("tx start bit shorter than half a bit")
        byte = 0
        for i in range(8):
            await self.ctx.tick().repeat(self.div)
            byte |= self.ctx.get(self.tx) << i
        await self.ctx.tick().repeat(self.div)
        if not self.ctx.get(self.tx):
            raise LinkTimeout("tx stop bit low")
        return byte

    async def read(self, n: int) -> bytes:
        return bytes([await self.read_byte() for _ in range(n)])
