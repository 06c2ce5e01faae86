// RUN: xdsl-opt %s | filecheck %s
// RUN: xdsl-opt %s --print-op-generic | xdsl-opt | filecheck %s

// The groq dialect (dialects/groq.py): scheduled TSP instructions, attributes only, as the
// Groq target writes them to program.mlir (one op per instruction kind).

"builtin.module"() ({
  "groq.read"() {id = 0 : i64, chip = 0 : i64, unit = "MEM_W22", queue = "MEM_W22.r", cycle = 0 : i64, cycles = 1 : i64, buf = "w:t0:payload", addr = 0 : i64, src = -1 : i64, out = [{stream = 4 : i64, dir = "E", dtype = "i8"}]} : () -> ()
  "groq.unpack"() {id = 1 : i64, chip = 0 : i64, unit = "VXM", queue = "VXM.0", cycle = 24 : i64, cycles = 1 : i64} : () -> ()
  "groq.install"() {id = 2 : i64, chip = 0 : i64, unit = "MXM_W0", queue = "MXM_W0.iw", cycle = 76 : i64, cycles = 1 : i64, buffer = 0 : i64, row = 0 : i64, tag = "w:t0:c0"} : () -> ()
  "groq.matmul_pass"() {id = 3 : i64, chip = 0 : i64, unit = "MXM_W0", queue = "MXM_W0.acc", cycle = 80 : i64, cycles = 1 : i64, buffer = 0 : i64, rows = [0 : i64, 32 : i64]} : () -> ()
  "groq.write"() {id = 4 : i64, chip = 0 : i64, unit = "MEM_W1", queue = "MEM_W1.w", cycle = 150 : i64, cycles = 1 : i64, buf = "v3", addr = 8191 : i64} : () -> ()
  "groq.macro"() {id = 5 : i64, chip = 0 : i64, unit = "VXM", queue = "VXM.1", cycle = 160 : i64, cycles = 19 : i64, kind = "rescale", reads = ["v3"], writes = ["v4"]} : () -> ()
  "groq.macro"() {id = 6 : i64, chip = 0 : i64, unit = "SXM_E", queue = "SXM_E.0", cycle = 180 : i64, cycles = 6 : i64, kind = "macro", ir_name = "linalg.transpose"} : () -> ()
  "groq.send"() {id = 7 : i64, chip = 0 : i64, unit = "C2C", queue = "C2C.1", cycle = 200 : i64, cycles = 83 : i64, link = 1 : i64, to = 1 : i64, reads = ["v4"], peer = 8 : i64} : () -> ()
  "groq.receive"() {id = 8 : i64, chip = 1 : i64, unit = "C2C", queue = "C2C.0", cycle = 800 : i64, cycles = 83 : i64, link = 0 : i64, from = 0 : i64, writes = ["v4@1"], src = 7 : i64} : () -> ()
}) {groq.schema = "q35c-groq-program/1", groq.cycles = 883 : i64} : () -> ()

// CHECK:      builtin.module attributes {groq.schema = "q35c-groq-program/1", groq.cycles = 883 : i64} {
// CHECK-NEXT:   "groq.read"() {id = 0 : i64, chip = 0 : i64, unit = "MEM_W22", queue = "MEM_W22.r", cycle = 0 : i64, cycles = 1 : i64, buf = "w:t0:payload", addr = 0 : i64, src = -1 : i64, out = [{stream = 4 : i64, dir = "E", dtype = "i8"}]} : () -> ()
// CHECK-NEXT:   "groq.unpack"() {id = 1 : i64, chip = 0 : i64, unit = "VXM", queue = "VXM.0", cycle = 24 : i64, cycles = 1 : i64} : () -> ()
// CHECK-NEXT:   "groq.install"() {id = 2 : i64, chip = 0 : i64, unit = "MXM_W0", queue = "MXM_W0.iw", cycle = 76 : i64, cycles = 1 : i64, buffer = 0 : i64, row = 0 : i64, tag = "w:t0:c0"} : () -> ()
// CHECK-NEXT:   "groq.matmul_pass"() {id = 3 : i64, chip = 0 : i64, unit = "MXM_W0", queue = "MXM_W0.acc", cycle = 80 : i64, cycles = 1 : i64, buffer = 0 : i64, rows = [0 : i64, 32 : i64]} : () -> ()
// CHECK-NEXT:   "groq.write"() {id = 4 : i64, chip = 0 : i64, unit = "MEM_W1", queue = "MEM_W1.w", cycle = 150 : i64, cycles = 1 : i64, buf = "v3", addr = 8191 : i64} : () -> ()
// CHECK-NEXT:   "groq.macro"() {id = 5 : i64, chip = 0 : i64, unit = "VXM", queue = "VXM.1", cycle = 160 : i64, cycles = 19 : i64, kind = "rescale", reads = ["v3"], writes = ["v4"]} : () -> ()
// CHECK-NEXT:   "groq.macro"() {id = 6 : i64, chip = 0 : i64, unit = "SXM_E", queue = "SXM_E.0", cycle = 180 : i64, cycles = 6 : i64, kind = "macro", ir_name = "linalg.transpose"} : () -> ()
// CHECK-NEXT:   "groq.send"() {id = 7 : i64, chip = 0 : i64, unit = "C2C", queue = "C2C.1", cycle = 200 : i64, cycles = 83 : i64, link = 1 : i64, to = 1 : i64, reads = ["v4"], peer = 8 : i64} : () -> ()
// CHECK-NEXT:   "groq.receive"() {id = 8 : i64, chip = 1 : i64, unit = "C2C", queue = "C2C.0", cycle = 800 : i64, cycles = 83 : i64, link = 0 : i64, from = 0 : i64, writes = ["v4@1"], src = 7 : i64} : () -> ()
// CHECK-NEXT: }
