"""Behavioural Verilog models of the ECP5 primitives the units instantiate (rtl/dsp.py), so
that the ECP5 form of the RTL runs in Verilator and Icarus like the portable one.

Yosys's ECP5 library declares ``MULT18X18D`` as a black box (no simulation model), so
this is written from the primitive's documented behaviour (Lattice's ECP5 sysDSP usage
guide): ``P = A * B`` over 18-bit operands, each signed when its ``SIGNEDA``/``SIGNEDB``
is high; with ``REG_OUTPUT_CLK = "CLK0"`` the product is held in an output register that
loads at CLK0's rising edge while CE0 is high and clears (synchronously) on RST0.  Only
that subset is modelled: an instance asking for input or pipeline registers, another
clock or the pre-adder paths stops the simulation at time 0 with a message.
"""


def mult18x18d_model() -> str:
    a_ports = ", ".join(f"A{k}" for k in range(18))
    b_ports = ", ".join(f"B{k}" for k in range(18))
    c_ports = ", ".join(f"C{k}" for k in range(18))
    p_ports = ", ".join(f"P{k}" for k in range(36))
    a_cat = ", ".join(f"A{k}" for k in reversed(range(18)))
    b_cat = ", ".join(f"B{k}" for k in reversed(range(18)))
    p_assign = "\n".join(f"  assign P{k} = p[{k}];" for k in range(36))
    return f"""
// Behavioural model of the ECP5 MULT18X18D subset rtl/dsp.py uses (tb/ecp5_cells.py).
module MULT18X18D (
  input {a_ports},
  input {b_ports},
  input {c_ports},
  input SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,
  input CLK0, CE0, RST0,
  output {p_ports}
);
  parameter REG_INPUTA_CLK = "NONE";
  parameter REG_INPUTB_CLK = "NONE";
  parameter REG_INPUTC_CLK = "NONE";
  parameter REG_PIPELINE_CLK = "NONE";
  parameter REG_OUTPUT_CLK = "NONE";
  parameter REG_OUTPUT_CE = "CE0";
  parameter REG_OUTPUT_RST = "RST0";
  parameter GSR = "ENABLED";
  parameter RESETMODE = "SYNC";
  parameter MULT_BYPASS = "DISABLED";
  parameter CAS_MATCH_REG = "FALSE";
  parameter HIGHSPEED_CLK = "NONE";
  parameter SOURCEB_MODE = "B_SHIFT";
  parameter CLK0_DIV = "ENABLED";
  parameter CLK1_DIV = "ENABLED";
  parameter CLK2_DIV = "ENABLED";
  parameter CLK3_DIV = "ENABLED";
  wire [17:0] a = {{{a_cat}}};
  wire [17:0] b = {{{b_cat}}};
  // each operand sign- or zero-extended to 36 bits, then a 36-bit product
  wire [35:0] a36 = {{{{18{{SIGNEDA & a[17]}}}}, a}};
  wire [35:0] b36 = {{{{18{{SIGNEDB & b[17]}}}}, b}};
  wire [35:0] prod = a36 * b36;
  reg [35:0] p_q = 36'd0;
  always @(posedge CLK0)
    if (RST0) p_q <= 36'd0;
    else if (CE0) p_q <= prod;
  wire [35:0] p = (REG_OUTPUT_CLK == "CLK0") ? p_q : prod;
{p_assign}
  initial begin
    if (REG_INPUTA_CLK != "NONE" || REG_INPUTB_CLK != "NONE" || REG_INPUTC_CLK != "NONE" ||
        REG_PIPELINE_CLK != "NONE" || (REG_OUTPUT_CLK != "NONE" && REG_OUTPUT_CLK != "CLK0") ||
        REG_OUTPUT_CE != "CE0" || REG_OUTPUT_RST != "RST0" || MULT_BYPASS != "DISABLED") begin
      $display("MULT18X18D model: only the output register on CLK0/CE0/RST0 is modelled");
      $finish;
    end
  end
endmodule
"""
