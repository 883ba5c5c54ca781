#!/usr/bin/env bash
# Regenerates every figure the README quotes into benchmarks/results/ (about 2 hours on 2 cores, most of it
# the split models' attacks, and their training when they are not cached).
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
out=benchmarks/results
mkdir -p "$out"

$python benchmarks/default_job.py --json "$out/default_job.json" | tee "$out/default_job.md"
$python benchmarks/boards.py --json "$out/boards.json" | tee "$out/boards.md"
$python benchmarks/models.py --json "$out/models.json" | tee "$out/models.md"
$python benchmarks/models.py --precision int16x8 --json "$out/models-int16x8.json" | tee "$out/models-int16x8.md"
$python benchmarks/profile.py --out "$out" | tee "$out/profile.md"
for model in digits-cnn resnet8-cifar10; do
    for channel in semihosting uart; do
        inferences=500
        [ "$model" = resnet8-cifar10 ] && inferences=50
        $python benchmarks/throughput.py --model "$model" --channel "$channel" --inferences "$inferences" \
            --json "$out/throughput-$model-$channel.json" | tee "$out/throughput-$model-$channel.md"
    done
done
for entropy_model in factorized hyperprior; do
    split="$(mktemp -d)"
    .venv/bin/tinyrobust split-evaluate --entropy-model "$entropy_model" --samples 30 --device-defense median:k=3 \
        --out "$split" | tee "$out/split-digits-$entropy_model.md"
    cp "$split/results.json" "$out/split-digits-$entropy_model.json"
    cp "$split/conditions.csv" "$out/split-digits-$entropy_model.csv"
    rm -rf "$split"
done
$python benchmarks/cluster.py --json "$out/cluster.json" | tee "$out/cluster.md"
$python benchmarks/real_data.py --json "$out/real-data-digits.json" | tee "$out/real-data-digits.md"
