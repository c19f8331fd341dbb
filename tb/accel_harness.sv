// Simulation harness around the Accelerator top (rtl/accelerator.py): the engine's
// external memory (two read ports with a fixed latency, the engine's write port, and
// the update unit's own read and write ports), the instruction ROM, and three more
// ROMs that stream the reorganization descriptors, the update descriptors and the
// predictor weights (a word is present when its top bit is set). Same conventions as
// tb/harness.sv (which it follows), so tb/server.py drives it unchanged; the extra
// ROMs are read from fixed file names in the run directory on the load_prog pulse.
`timescale 1ns/1ps
module accel_harness #(
    parameter R = 4, parameter C = 4, parameter AW = 16, parameter SLOT = 32,
    parameter IW = 1024, parameter CW = 1008, parameter LAT = 2, parameter PMAX = 4096,
    parameter L = 4, parameter RDW = 93, parameter UDW = 82, parameter PWW = 140,
    parameter DMAX = 256, parameter WMAX = 8192, parameter ECW = 672
) (
`ifdef HARNESS_CLOCK
    output reg  clk /*verilator public_flat_rw*/,
`else
    input  wire clk /*verilator public_flat_rw*/,
`endif
    input  wire rst /*verilator public_flat_rw*/,
    input  wire load_mem /*verilator public_flat_rw*/,
    input  wire load_prog /*verilator public_flat_rw*/,
    input  wire dump_mem /*verilator public_flat_rw*/,
    input  wire [31:0] dump_lo /*verilator public_flat_rw*/,
    input  wire [31:0] dump_hi /*verilator public_flat_rw*/,
    input  wire start /*verilator public_flat_rw*/,
    input  wire [31:0] prog_len /*verilator public_flat_rw*/,
    input  wire [7:0]  stall_prob /*verilator public_flat_rw*/,
    input  wire [31:0] stall_seed /*verilator public_flat_rw*/,
    input  wire [63:0] watchdog /*verilator public_flat_rw*/,
    input  wire [31:0] fault_addr /*verilator public_flat_rw*/,
    input  wire        fault_en /*verilator public_flat_rw*/,
    output reg  done /*verilator public_flat_rw*/,
    output reg  timed_out /*verilator public_flat_rw*/,
    output wire [11:0] error /*verilator public_flat_rw*/,
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
    reg [RDW:0]    rdesc_rom [0:DMAX-1];
    reg [UDW:0]    udesc_rom [0:DMAX-1];
    reg [PWW:0]    pw_rom [0:WMAX-1];
    reg [15:0]     acfg [0:0];
    reg [8*512-1:0] memin, memout, progin;
    initial begin
        if (!$value$plusargs("MEMIN=%s", memin)) memin = "mem_in.hex";
        if (!$value$plusargs("MEMOUT=%s", memout)) memout = "mem_out.hex";
        if (!$value$plusargs("PROGIN=%s", progin)) progin = "prog.hex";
        acfg[0] = 16'h0;
    end
    always @(posedge clk) begin
        if (load_mem) $readmemh(memin, mem);
        if (load_prog) begin
            $readmemh(progin, prog);
            $readmemh("rdesc.hex", rdesc_rom);
            $readmemh("udesc.hex", udesc_rom);
            $readmemh("pw.hex", pw_rom);
            $readmemh("acfg.hex", acfg);
        end
        if (dump_mem) $writememh(memout, mem, dump_lo, dump_hi);
    end

    // the update unit's write stream, written in the memory model's clocked block
    `define MEM_MODEL_EXTRA_WRITES \
        if (uw_valid && rdy_m) \
            for (l = 0; l < 2*L; l = l + 1) \
                if (uw_req[2*L*AW + 2*L*SLOT + l]) \
                    mem[uw_req[l*AW +: AW]] <= uw_req[2*L*AW + l*SLOT +: SLOT];
    wire [2*L*AW+2*L*SLOT+2*L-1:0] uw_req; wire uw_valid;
    `include "mem_model.svh"
    wire rdy_u = rdy_m;       // the update unit's ports share the mask port's ready

    // ---- accelerator ---------------------------------------------------------------
    wire              instr_ready;
    wire              busy;
    wire [L*AW+L-1:0] u_req;  wire u_req_valid;
    reg  [L*SLOT-1:0] u_resp; reg  u_resp_valid;
    reg  running;
    reg  [31:0] pc;
    reg  [31:0] rd_ptr, ud_ptr, pw_ptr;
    wire instr_valid = running && (pc < prog_len_q);
    wire rdesc_valid = running && rdesc_rom[rd_ptr[$clog2(DMAX)-1:0]][RDW];
    wire udesc_valid = running && udesc_rom[ud_ptr[$clog2(DMAX)-1:0]][UDW];
    wire pw_valid    = running && pw_rom[pw_ptr[$clog2(WMAX)-1:0]][PWW];
    wire rdesc_ready, udesc_ready, pw_ready;
    wire [CW-1:0] cnt_all;
    assign counters = cnt_all;

    accelerator dut (
        .clk(clk), .rst(rst_q),
        .instr__payload(prog[pc[$clog2(PMAX)-1:0]]), .instr__valid(instr_valid), .instr__ready(instr_ready),
        .rd_a__req__payload(a_req), .rd_a__req__valid(a_req_valid), .rd_a__req__ready(rdy_a),
        .rd_a__resp__payload(a_resp), .rd_a__resp__valid(a_resp_valid), .rd_a__resp__ready(),
        .rd_b__req__payload(b_req), .rd_b__req__valid(b_req_valid), .rd_b__req__ready(rdy_b),
        .rd_b__resp__payload(b_resp), .rd_b__resp__valid(b_resp_valid), .rd_b__resp__ready(),
        .wr__payload(w_req), .wr__valid(w_valid), .wr__ready(rdy_w),
        .rd_m__req__payload(m_req), .rd_m__req__valid(m_req_valid), .rd_m__req__ready(rdy_u),
        .rd_m__resp__payload(m_resp), .rd_m__resp__valid(m_resp_valid), .rd_m__resp__ready(),
        .wz__payload(z_req), .wz__valid(z_valid), .wz__ready(rdy_u),
        .rdesc__payload(rdesc_rom[rd_ptr[$clog2(DMAX)-1:0]][RDW-1:0]), .rdesc__valid(rdesc_valid),
        .rdesc__ready(rdesc_ready),
        .udesc__payload(udesc_rom[ud_ptr[$clog2(DMAX)-1:0]][UDW-1:0]), .udesc__valid(udesc_valid),
        .udesc__ready(udesc_ready),
        .pweights__payload(pw_rom[pw_ptr[$clog2(WMAX)-1:0]][PWW-1:0]), .pweights__valid(pw_valid),
        .pweights__ready(pw_ready),
        .shift1(acfg[0][5:0]), .shift2(acfg[0][13:8]),
        .upd_rd__req__payload(u_req), .upd_rd__req__valid(u_req_valid), .upd_rd__req__ready(rdy_u),
        .upd_rd__resp__payload(u_resp), .upd_rd__resp__valid(u_resp_valid), .upd_rd__resp__ready(),
        .upd_wr__payload(uw_req), .upd_wr__valid(uw_valid), .upd_wr__ready(rdy_u),
        .busy(busy), .error(error), .counters(cnt_all[ECW-1:0]), .pcounters(cnt_all[CW-1:ECW])
    );

    // ---- the update unit's read port: fixed latency LAT, in order --------------------------
    reg [L*SLOT-1:0] u_pipe [0:LAT-1]; reg u_pv [0:LAT-1];
    initial for (s = 0; s < LAT; s = s + 1) begin u_pv[s] = 1'b0; u_pipe[s] = {L*SLOT{1'b0}}; end
    always @(posedge clk) begin
        for (l = 0; l < L; l = l + 1)
            u_pipe[0][l*SLOT +: SLOT] <= u_req[L*AW + l] ? mem[u_req[l*AW +: AW]] : {SLOT{1'b0}};
        u_pv[0] <= u_req_valid && rdy_u && !rst;
        for (s = 1; s < LAT; s = s + 1) begin
            u_pipe[s] <= u_pipe[s-1]; u_pv[s] <= u_pv[s-1] && !rst;
        end
    end
    always @(*) begin u_resp = u_pipe[LAT-1]; u_resp_valid = u_pv[LAT-1]; end

    // ---- sequencing and watchdog -----------------------------------------------------------
    reg settle;
    always @(posedge clk) begin
        if (rst) begin
            running <= 1'b0; done <= 1'b0; timed_out <= 1'b0; pc <= 0; run_cycles <= 0; settle <= 1'b0;
            rd_ptr <= 0; ud_ptr <= 0; pw_ptr <= 0;
        end else if (start) begin
            running <= 1'b1; done <= 1'b0; timed_out <= 1'b0; pc <= 0; run_cycles <= 0; settle <= 1'b0;
            rd_ptr <= 0; ud_ptr <= 0; pw_ptr <= 0;
        end else if (running) begin
            run_cycles <= run_cycles + 1;
            settle <= instr_valid && instr_ready;
            if (instr_valid && instr_ready) pc <= pc + 1;
            if (rdesc_valid && rdesc_ready) rd_ptr <= rd_ptr + 1;
            if (udesc_valid && udesc_ready) ud_ptr <= ud_ptr + 1;
            if (pw_valid && pw_ready) pw_ptr <= pw_ptr + 1;
            if ((!instr_valid && !settle && !busy && !pw_valid) || error != 12'h0) begin
                running <= 1'b0; done <= 1'b1;
            end else if (run_cycles >= watchdog) begin
                running <= 1'b0; done <= 1'b1; timed_out <= 1'b1;
            end
        end
    end
endmodule
