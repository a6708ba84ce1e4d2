//! The pickle opcode decoder shared by the unpickler and the scanner.
