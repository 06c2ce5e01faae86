// RUN: xdsl-opt %s --split-input-file --verify-diagnostics | filecheck %s

"groq.read"() {chip = 0 : i64, unit = "VXM", queue = "VXM.0", cycle = 0 : i64, cycles = 1 : i64} : () -> ()
// CHECK: groq.read cannot issue on VXM

// -----

"groq.install"() {chip = 0 : i64, unit = "MXM_W0", queue = "MXM_W0.iw", cycle = -1 : i64, cycles = 1 : i64} : () -> ()
// CHECK: groq.install: bad issue cycle or duration

// -----

"groq.send"() {chip = 0 : i64, unit = "MEM_W3", queue = "C2C.0", cycle = 5 : i64, cycles = 3 : i64} : () -> ()
// CHECK: groq.send cannot issue on MEM_W3

// -----

"groq.write"() {unit = "MEM_W0", queue = "MEM_W0.w", cycle = 0 : i64, cycles = 1 : i64} : () -> ()
// CHECK: attribute 'chip' expected in operation 'groq.write'
