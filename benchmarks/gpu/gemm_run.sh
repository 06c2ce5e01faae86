#!/bin/bash
# cuda helper's GPU call: GEMM checks, models with the GEMM, timings, cuBLAS peers, ncu.
set -u
cd "$(dirname "$0")"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
export Q35_BENCH_PATH=2 PYTHONUNBUFFERED=1
start=$(date +%s)
bash run_all.sh res
echo "run_all: $(( $(date +%s) - start )) s"
if [ "${NCU:-1}" = 1 ] && command -v ncu >/dev/null; then
  row=$(grep '^4096 11008 ' gemv/shapes.txt)
  (cd gemv && timeout 90 ncu --kernel-name regex:q35_gemm_f16 --launch-skip 2570 --launch-count 1 \
     --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
     --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis_Chart --section SchedulerStats \
     ./gemv_bench time - $row) > res/ncu.txt 2>&1
fi
tar czf "$OUT/res.tgz" res
echo "== build"; cat res/build*.txt | grep -v "rc=0" | head -20
ls res/*.error.txt 2>/dev/null && cat res/*.error.txt
echo "== models"; grep -E "PASS|FAIL" res/models.txt | cut -c1-200
echo "== models_tc"; grep -E "PASS|FAIL|rc=" res/models_tc.txt | cut -c1-200
echo "== gemv checks"; grep -c "bit-exact=True" res/gemv.txt; grep -c ": ok" res/gemv.txt; grep -E "FAIL|bit-exact=False" res/gemv.txt | head
grep -E "memcheck|racecheck|initcheck" res/gemv.txt | cut -c1-160
echo "== gemm checks"; grep "check tc" res/gemv.txt | cut -c1-220
echo "== gemm times"; grep -A1 "gemm tc" res/gemv.txt | grep -v "^--" | sed 's/ weight_bytes [0-9]*//'
echo "== cuBLAS"; grep -E "torch_fp16|device|copy" res/torch.txt | sed 's/ weight_bytes [0-9]*//' | cut -c1-170
echo "== ncu"; grep -E "Duration|Throughput|Registers|Achieved Occupancy|Theoretical Occupancy|Issue Slots|No Eligible|Warp Cycles Per Issued|Stall|Executed Ipc|Shared Memory|Block Limit" res/ncu.txt | head -40
echo "== sass (q35_gemm_f16<4>)"
if command -v cuobjdump >/dev/null; then
  cuobjdump -sass -fun '_Z12q35_gemm_f16ILi4EEvPfPKfi8q35_q3p512q35_epilogue' gemv/gemv_bench > res/sass4.txt 2>&1
  echo "lines $(wc -l < res/sass4.txt) HMMA $(grep -c HMMA res/sass4.txt) LDSM $(grep -c LDSM res/sass4.txt) LDS $(grep -c 'LDS\b\|LDS\.' res/sass4.txt) STS $(grep -c STS res/sass4.txt) LDG $(grep -c LDG res/sass4.txt) BAR $(grep -c BAR res/sass4.txt) LDL $(grep -c LDL res/sass4.txt)"
  tar czf "$OUT/res.tgz" res
fi
