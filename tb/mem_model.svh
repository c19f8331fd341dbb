// The engine's external memory, shared by tb/harness.sv (engine alone) and
// tb/accel_harness.sv (Accelerator): included inside the harness module after `mem`,
// `start`, `rst` and the run inputs are declared, before the design is instantiated.
// It declares the engine's memory-side wires and models:
//   * random back-pressure (xorshift32): rdy_a, rdy_b, rdy_w, rdy_m ready with
//     probability 1 - stall_prob/256 each cycle;
//   * read ports A (R lanes), B and M (C lanes): fixed latency LAT, in order;
//   * the write port with the ReLU-mask bits written beside each row, and fault
//     injection (bit 0 of slot fault_addr flipped the first time it is written in a run);
//   * the zero-write port (ocompact).
// A harness with more writers defines MEM_MODEL_EXTRA_WRITES (statements run in the
// same clocked block, after the engine's writes) before including this file.

// ---- random back-pressure (xorshift32) -----------------------------------------------
reg [31:0] lfsr = 32'h1;
wire [31:0] l1 = lfsr ^ (lfsr << 13);
wire [31:0] l2 = l1 ^ (l1 >> 17);
wire [31:0] lnext = l2 ^ (l2 << 5);
always @(posedge clk) lfsr <= rst ? 32'h1 : start ? (stall_seed | 32'h1) : lnext;
// Inputs that feed combinational logic are registered first: Verilator re-evaluates
// everything downstream of a top-level input on every time step otherwise.
reg [7:0]  stall_q;
reg [31:0] prog_len_q;
// The design's next-state logic reads its reset: a top-level reset would put the whole
// netlist into that per-step evaluation, so the reset is registered too.
reg rst_q = 1'b1;
always @(posedge clk) begin stall_q <= stall_prob; prog_len_q <= prog_len; rst_q <= rst; end
wire rdy_a = (lfsr[7:0]   >= stall_q);
wire rdy_b = (lfsr[15:8]  >= stall_q);
wire rdy_w = (lfsr[23:16] >= stall_q);
wire rdy_m = (lfsr[31:24] >= stall_q);

// ---- the engine's memory-side wires ------------------------------------------------------
wire [R*AW+R-1:0] a_req;  wire a_req_valid;
wire [C*AW+C-1:0] b_req;  wire b_req_valid;
reg  [R*SLOT-1:0] a_resp; reg  a_resp_valid;
reg  [C*SLOT-1:0] b_resp; reg  b_resp_valid;
wire [C*AW+C-1:0] m_req;  wire m_req_valid;   // ReLU-mask reads (sparse modes)
reg  [C*SLOT-1:0] m_resp; reg  m_resp_valid;
wire [2*C*AW+C*SLOT+3*C-1:0] w_req; wire w_valid;
wire [C*AW+C-1:0] z_req; wire z_valid;         // zero writes (ocompact)

// ---- read ports: fixed latency LAT, in order ---------------------------------------------
reg [R*SLOT-1:0] a_pipe [0:LAT-1]; reg a_pv [0:LAT-1];
reg [C*SLOT-1:0] b_pipe [0:LAT-1]; reg b_pv [0:LAT-1];
reg [C*SLOT-1:0] m_pipe [0:LAT-1]; reg m_pv [0:LAT-1];
integer l, s;
initial begin   // 4-state simulators start registers at X: give the pipes a defined state
    for (s = 0; s < LAT; s = s + 1) begin
        a_pv[s] = 1'b0; b_pv[s] = 1'b0; m_pv[s] = 1'b0;
        a_pipe[s] = {R*SLOT{1'b0}}; b_pipe[s] = {C*SLOT{1'b0}}; m_pipe[s] = {C*SLOT{1'b0}};
    end
end
always @(posedge clk) begin
    for (l = 0; l < R; l = l + 1)
        a_pipe[0][l*SLOT +: SLOT] <= a_req[R*AW + l] ? mem[a_req[l*AW +: AW]] : {SLOT{1'b0}};
    for (l = 0; l < C; l = l + 1)
        b_pipe[0][l*SLOT +: SLOT] <= b_req[C*AW + l] ? mem[b_req[l*AW +: AW]] : {SLOT{1'b0}};
    for (l = 0; l < C; l = l + 1)
        m_pipe[0][l*SLOT +: SLOT] <= m_req[C*AW + l] ? mem[m_req[l*AW +: AW]] : {SLOT{1'b0}};
    a_pv[0] <= a_req_valid && rdy_a && !rst;
    b_pv[0] <= b_req_valid && rdy_b && !rst;
    m_pv[0] <= m_req_valid && rdy_m && !rst;
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

// ---- write ports ---------------------------------------------------------------------------
reg fault_done = 1'b0;
// zero-write lanes accepted so far (never reset: the server reads it before and after a
// run), so tests can check that each dropped output element is cleared once, no more
reg [63:0] zero_lanes /*verilator public_flat_rw*/ = 64'd0;
integer zl, zk;           // (own loop variables: `l` belongs to the other blocks)
always @(posedge clk)
    if (z_valid && rdy_m) begin
        zl = 0;
        for (zk = 0; zk < C; zk = zk + 1) zl = zl + z_req[C*AW + zk];
        zero_lanes <= zero_lanes + zl;
    end
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
`ifdef MEM_MODEL_EXTRA_WRITES
    `MEM_MODEL_EXTRA_WRITES
`endif
end
