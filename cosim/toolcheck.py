"""`make setup`'s last step: check that every tool the project needs is usable."""
import shutil
import subprocess
import sys


def main() -> int:
    problems = []
    try:
        import amaranth, cocotb, numpy, torch, sklearn  # noqa: F401
    except ImportError as e:
        problems.append(f"python package missing: {e.name}")
    try:
        from rtl.generate import verilator_bin
        out = subprocess.run([verilator_bin(), "--version"], capture_output=True, text=True).stdout.strip()
        print(f"verilator: {out}")
    except Exception as e:  # noqa: BLE001
        problems.append(f"verilator: {e}")
    iv = shutil.which("iverilog")
    print(f"iverilog: {iv or 'missing'}")
    if not iv:
        problems.append("iverilog missing (apt-get install iverilog)")
    import amaranth
    print(f"amaranth {amaranth.__version__}, cocotb {cocotb.__version__}, torch {torch.__version__}")
    for p in problems:
        print(f"setup problem: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
