#!/usr/bin/env bash
# The prepared GPU session (the device tool lends an H100 for minutes): every GPU figure of
# docs/benchmarks.md "GPU" comes from this script. Run from the repository root:
#     OUT=/tmp/gpu bash benchmarks/gpu_run.sh                 # all parts
#     OUT=/tmp/gpu bash benchmarks/gpu_run.sh train sampling  # some parts
# Parts: network (bench_model, SiT-XL/2 batch 32 and 256), cli (sit train --compile and sit sample
# on CUDA), compile (bench_model under torch.compile), train (the sit train step, bench_train),
# sampling (guided SiT-XL/2 sampling, bench_sampling).
# Needs torch with CUDA, numpy, safetensors, scipy, scikit-learn, matplotlib, tqdm (no install:
# the package runs from the working tree through PYTHONPATH). Each part has its own time limit, so
# a slow part cannot take the rest down; everything is logged to $OUT/gpu_log.txt.
set -u
OUT=${OUT:-/tmp/sit-gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PARTS=${*:-network cli compile train sampling}

network() {
    echo "== network: SiT-XL/2 at batch 32 and 256, official-tf32 / tf32 / bf16-auto / bf16-w"
    timeout 220 python3 benchmarks/bench_model.py --device cuda --models SiT-XL/2 --batch 32 256 \
        --repeats 10 --warmup 3 --peak-size 8192 --loss-steps 40 --spec-tflops 989 --json "$OUT/bench_model_xl2.json"
    echo "rc=$?"
}
cli() {
    echo "== sit train on CUDA: the demo for 300 steps with --compile, then sit sample from it"
    rm -rf /tmp/sit-demo
    timeout 120 python3 -m sit.cli train --out /tmp/sit-demo --device cuda --steps 300 --compile --no-progress --quality-samples-per-class 20
    echo "rc=$?"
    cp /tmp/sit-demo/samples.png "$OUT/demo_samples.png" 2>/dev/null; cp /tmp/sit-demo/quality.json "$OUT/demo_quality.json" 2>/dev/null
    timeout 45 python3 -m sit.cli sample --ckpt /tmp/sit-demo --device cuda --method euler_maruyama --num-steps 50 \
        --num-samples 64 --batch-size 32 --labels 0,1,2,3,4,5,6,7,8,9 --cfg-scale 2 --grid-png --out /tmp/sit-demo-sample --no-progress
    echo "rc=$?"
    cp /tmp/sit-demo-sample/grid.png "$OUT/demo_sample_grid.png" 2>/dev/null
}
compile() {
    echo "== torch.compile of the network (bf16 autocast), SiT-XL/2 at batch 32 and 256"
    timeout 150 python3 benchmarks/bench_model.py --device cuda --models SiT-XL/2 --batch 32 256 --only bf16-auto+compile \
        --repeats 10 --warmup 3 --peak-size 8192 --loss-steps 0 --spec-tflops 989 --json "$OUT/bench_model_xl2_compile.json"
    echo "rc=$?"
}
train() {
    echo "== the sit train step (t, eps, x_t, ModelField, loss, backward, AdamW, EMA), SiT-XL/2 batch 32"
    timeout 60 python3 benchmarks/bench_train.py --device cuda --models SiT-XL/2 --batches 32 --precisions fp32 --repeats 5
    echo "rc=$?"
    timeout 150 python3 benchmarks/bench_train.py --device cuda --models SiT-XL/2 --batches 32 --precisions bf16 --compile --repeats 5
    echo "rc=$?"
}
sampling() {
    echo "== guided sampling, SiT-XL/2, 32 latents, cfg 4 (64 rows per call), 50 NFE, bf16"
    timeout 60 python3 benchmarks/bench_sampling.py --model SiT-XL/2 --device cuda --precision bf16 --batch 32 --repeats 2
    echo "rc=$?"
    timeout 120 python3 benchmarks/bench_sampling.py --model SiT-XL/2 --device cuda --precision bf16 --batch 32 --repeats 2 --compile \
        --only "euler ODE" "euler_maruyama SDE (sit)"
    echo "rc=$?"
}

{
echo "== environment ($PARTS)"; date -u
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv
python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, torch.cuda.get_device_name())"
for part in $PARTS; do "$part"; done
date -u
} 2>&1 | tee "$OUT/gpu_log.txt"
