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

    // ---- random back-pressure (xorshift32) ---------------------------------
    reg [31:0] lfsr = 32'h1;
    wire [31:0] l1 = lfsr ^ (lfsr << 13);
    wire [31:0] l2 = l1 ^ (l1 >> 17);
    wire [31:0] lnext = l2 ^ (l2 << 5);
    always @(posedge clk) lfsr <= rst ? 32'h1 : start ? (stall_seed | 32'h1) : lnext;
    // Inputs that feed combinational logic are registered first: Verilator re-evaluates
    // everything downstream of a top-level input on every time step otherwise.
    reg [7:0]  stall_q;
    reg [31:0] prog_len_q;
    // The engine's next-state logic reads its reset: a top-level reset would put the whole
    // netlist into that per-step evaluation, so the reset is registered too.
    reg rst_q = 1'b1;
    always @(posedge clk) begin stall_q <= stall_prob; prog_len_q <= prog_len; rst_q <= rst; end
    wire rdy_a = (lfsr[7:0]   >= stall_q);
    wire rdy_b = (lfsr[15:8]  >= stall_q);
    wire rdy_w = (lfsr[23:16] >= stall_q);
    wire rdy_m = (lfsr[31:24] >= stall_q);

    // ---- engine -------------------------------------------------------------
    wire              instr_ready;
    wire              busy;
    wire [R*AW+R-1:0] a_req;  wire a_req_valid;
    wire [C*AW+C-1:0] b_req;  wire b_req_valid;
    reg  [R*SLOT-1:0] a_resp; reg  a_resp_valid;
    reg  [C*SLOT-1:0] b_resp; reg  b_resp_valid;
    wire [C*AW+C-1:0] m_req;  wire m_req_valid;
    reg  [C*SLOT-1:0] m_resp; reg  m_resp_valid;
    wire [2*C*AW+C*SLOT+3*C-1:0] w_req; wire w_valid;
    wire [C*AW+C-1:0] z_req; wire z_valid;
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

    // ---- read ports: fixed latency LAT, in order ------------------------------
    reg [R*SLOT-1:0] a_pipe [0:LAT-1]; reg a_pv [0:LAT-1];
    reg [C*SLOT-1:0] b_pipe [0:LAT-1]; reg b_pv [0:LAT-1];
    reg [C*SLOT-1:0] m_pipe [0:LAT-1]; reg m_pv [0:LAT-1];
    integer l, s;
    initial begin   // 4-state simulators start registers at X: give the pipes a defined state
        for (s = 0; s < LAT; s = s + 1) begin
            a_pv[s] = 1'b0; b_pv[s] = 1'b0; a_pipe[s] = {R*SLOT{1'b0}}; b_pipe[s] = {C*SLOT{1'b0}};
            m_pv[s] = 1'b0; m_pipe[s] = {C*SLOT{1'b0}};
        end
    end
    always @(posedge clk) begin
        for (l = 0; l < R; l = l + 1)
            a_pipe[0][l*SLOT +: SLOT] <= a_req[R*AW + l] ? mem[a_req[l*AW +: AW]] : {SLOT{1'b0}};
        for (l = 0; l < C; l = l + 1)
            b_pipe[0][l*SLOT +: SLOT] <= b_req[C*AW + l] ? mem[b_req[l*AW +: AW]] : {SLOT{1'b0}};
        for (l = 0; l < C; l = l + 1)
            m_pipe[0][l*SLOT +: SLOT] <= m_req[C*AW + l] ? mem[m_req[l*AW +: AW]] : {SLOT{1'b0}};
        m_pv[0] <= m_req_valid && rdy_m && !rst;
        a_pv[0] <= a_req_valid && rdy_a && !rst;
        b_pv[0] <= b_req_valid && rdy_b && !rst;
        for (s = 1; s < LAT; s = s + 1) begin
            a_pipe[s] <= a_pipe[s-1]; a_pv[s] <= a_pv[s-1] && !rst;
            b_pipe[s] <= b_pipe[s-1]; b_pv[s] <= b_pv[s-1] && !rst;
            m_pipe[s] <= m_pipe[s-1]; m_pv[s] <= m_pv[s-1] && !rst;
        end
    end
    always @(*) begin
        a_resp = a_pipe[LAT-1]; a_resp_valid = a_pv[LAT-1];
        b_resp = b_pipe[LAT-1]; b_resp_valid = b_pv[LAT-1];
        m_resp = m_pipe[LAT-1]; m_resp_valid = m_pv[LAT-1];
    end

    // ---- write port ----------------------------------------------------------
    reg fault_done = 1'b0;
    always @(posedge clk) begin
        if (start) fault_done <= 1'b0;
        if (w_valid && rdy_w) begin
            for (l = 0; l < C; l = l + 1)
                if (w_req[C*AW + C*SLOT + l]) begin
                    if (fault_en && !fault_done && w_req[l*AW +: AW] == fault_addr[AW-1:0]) begin
                        mem[w_req[l*AW +: AW]] <= w_req[C*AW + l*SLOT +: SLOT] ^ {{(SLOT-1){1'b0}}, 1'b1};
                        fault_done <= 1'b1;
                    end else
                        mem[w_req[l*AW +: AW]] <= w_req[C*AW + l*SLOT +: SLOT];
                end
            // the ReLU mask bits written beside the row
            for (l = 0; l < C; l = l + 1)
                if (w_req[2*C*AW + C*SLOT + 2*C + l])
                    mem[w_req[C*AW + C*SLOT + C + l*AW +: AW]] <= {{(SLOT-1){1'b0}}, w_req[2*C*AW + C*SLOT + C + l]};
        end
        // zero writes (output columns that no row needs)
        if (z_valid && rdy_m)
            for (l = 0; l < C; l = l + 1)
                if (z_req[C*AW + l]) mem[z_req[l*AW +: AW]] <= {SLOT{1'b0}};
    end

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
