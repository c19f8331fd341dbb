// Simulation harness around the generated engine (Verilator and Icarus).
//
// It plays the external memory (two operand read ports and a mask read port with a
// fixed latency, one write port and a zero-write port
// port, optional random back-pressure) and the instruction source (a program ROM),
// so that a whole program runs without a Python call per cycle. Bulk data moves
// through $readmemh / $writememh files named by plusargs.
`timescale 1ns/1ps
module harness #(
    parameter R = 4, parameter C = 4, parameter AW = 16, parameter SLOT = 32,
    parameter IW = 1024, parameter CW = 672, parameter LAT = 2, parameter PMAX = 4096
) (
`ifdef HARNESS_CLOCK
    // With --timing the clock runs inside the model, not through VPI callbacks
    output reg  clk /*verilator public_flat_rw*/,
`else
    input  wire clk /*verilator public_flat_rw*/,
`endif
    input  wire rst /*verilator public_flat_rw*/,
    input  wire load_mem /*verilator public_flat_rw*/,   // pulse: $readmemh(+MEMIN) into memory
    input  wire load_prog /*verilator public_flat_rw*/,   // pulse: $readmemh(+PROGIN) into the program ROM
    input  wire dump_mem /*verilator public_flat_rw*/,   // pulse: $writememh(+MEMOUT, dump_lo..dump_hi)
    input  wire [31:0] dump_lo /*verilator public_flat_rw*/,
    input  wire [31:0] dump_hi /*verilator public_flat_rw*/,
    input  wire start /*verilator public_flat_rw*/,   // pulse: run program[0 .. prog_len-1]
    input  wire [31:0] prog_len /*verilator public_flat_rw*/,
    input  wire [7:0]  stall_prob /*verilator public_flat_rw*/,   // P(port not ready) = stall_prob/256 each cycle
    input  wire [31:0] stall_seed /*verilator public_flat_rw*/,
    input  wire [63:0] watchdog /*verilator public_flat_rw*/,   // cycles before a run is abandoned
    input  wire [31:0] fault_addr /*verilator public_flat_rw*/,   // fault injection: flip bit 0 of this slot's write ...
    input  wire        fault_en /*verilator public_flat_rw*/,   // ... the first time it is written during a run
    output reg  done /*verilator public_flat_rw*/,
    output reg  timed_out /*verilator public_flat_rw*/,
    output wire [3:0] error /*verilator public_flat_rw*/,
    output wire [CW-1:0] counters /*verilator public_flat_rw*/,
    output reg  [63:0] run_cycles /*verilator public_flat_rw*/
);
`ifdef HARNESS_CLOCK
    initial clk = 1'b0;
    always #5 clk = ~clk;
`endif
    localparam MW = 1 << AW;
    reg [SLOT-1:0] mem [0:MW-1];
    reg [IW-1:0]   prog [0:PMAX-1];
    reg [8*512-1:0] memin, memout, progin;
    initial begin
        if (!$value$plusargs("MEMIN=%s", memin)) memin = "mem_in.hex";
        if (!$value$plusargs("MEMOUT=%s", memout)) memout = "mem_out.hex";
        if (!$value$plusargs("PROGIN=%s", progin)) progin = "prog.hex";
    end
    always @(posedge clk) begin
        if (load_mem) $readmemh(memin, mem);
        if (load_prog) $readmemh(progin, prog);
        if (dump_mem) $writememh(memout, mem, dump_lo, dump_hi);
    end

    `include "mem_model.svh"

    // ---- engine -------------------------------------------------------------
    wire              instr_ready;
    wire              busy;
    reg  running;
    reg  [31:0] pc;
    wire instr_valid = running && (pc < prog_len_q);

    engine dut (
        .clk(clk), .rst(rst_q),
        .instr__payload(prog[pc[$clog2(PMAX)-1:0]]), .instr__valid(instr_valid), .instr__ready(instr_ready),
        .rd_a__req__payload(a_req), .rd_a__req__valid(a_req_valid), .rd_a__req__ready(rdy_a),
        .rd_a__resp__payload(a_resp), .rd_a__resp__valid(a_resp_valid), .rd_a__resp__ready(),
        .rd_b__req__payload(b_req), .rd_b__req__valid(b_req_valid), .rd_b__req__ready(rdy_b),
        .rd_b__resp__payload(b_resp), .rd_b__resp__valid(b_resp_valid), .rd_b__resp__ready(),
        .rd_m__req__payload(m_req), .rd_m__req__valid(m_req_valid), .rd_m__req__ready(rdy_m),
        .rd_m__resp__payload(m_resp), .rd_m__resp__valid(m_resp_valid), .rd_m__resp__ready(),
        .wr__payload(w_req), .wr__valid(w_valid), .wr__ready(rdy_w),
        .wz__payload(z_req), .wz__valid(z_valid), .wz__ready(rdy_m),
        .busy(busy), .error(error), .counters(counters)
    );

    // ---- program sequencing and watchdog ------------------------------------
    reg settle;   // one cycle for the engine to leave IDLE after the last issue
    always @(posedge clk) begin
        if (rst) begin
            running <= 1'b0; done <= 1'b0; timed_out <= 1'b0; pc <= 0; run_cycles <= 0; settle <= 1'b0;
        end else if (start) begin
            running <= 1'b1; done <= 1'b0; timed_out <= 1'b0; pc <= 0; run_cycles <= 0; settle <= 1'b0;
        end else if (running) begin
            run_cycles <= run_cycles + 1;
            settle <= instr_valid && instr_ready;
            if (instr_valid && instr_ready) pc <= pc + 1;
            if (!instr_valid && !settle && !busy) begin
                running <= 1'b0; done <= 1'b1;
            end else if (run_cycles >= watchdog) begin
                running <= 1'b0; done <= 1'b1; timed_out <= 1'b1;
            end
        end
    end
endmodule
