#!/usr/bin/env bash
# The laptop tier: train HRM, TRM (MLP and attention mixers), the Attractor and EqR one after another on
# this CPU for the experiment's budget each (a number of updates per reasoner: laptop_smoke, laptop_sudoku,
# laptop_maze), evaluate them, and compare them in one table and figure.
#
#   bash bench/laptop_tier.sh                      # laptop_sudoku: 6x6 Sudoku, 5-15 minutes per reasoner
#   bash bench/laptop_tier.sh laptop_smoke         # 4x4 Sudoku, 2,000 updates per reasoner
#   bash bench/laptop_tier.sh laptop_maze          # 6x6 unique-path mazes
#   MODELS=trm bash bench/laptop_tier.sh laptop_sudoku trainer.max_minutes=5   # extra Hydra overrides
#
# Writes runs/laptop_tier/<experiment>/{<n>-<model>-tiny/, comparison.md, comparison.csv, comparison.png}.
# Wall times are comparable only on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
experiment=${1:-laptop_sudoku}
shift || true
case $experiment in
  laptop_maze) models=${MODELS:-trm_mlp,trm,attractor_mlp,attractor} ;;
  *) models=${MODELS:-hrm,trm_mlp,trm,attractor_mlp,attractor,eqr} ;;
esac
out=runs/laptop_tier/$experiment
rm -rf "$out"
python -m reasoners.train -m "experiment=$experiment" "model=$models" trainer.progress=false \
  "hydra.sweep.dir=$out" "$@"
# Evaluate every run (all test puzzles, curve to 128 steps; breadth up to 16 trajectories at 16 steps on
# 256 puzzles; a small solver-budget grid for the Attractor).
for run in "$out"/*/; do
  if [ -f "$run/summary.json" ]; then
    python -m reasoners.evaluate "checkpoint=$run" eval.attractor.max_puzzles=128 'eval.breadth.steps=[16]' \
      'eval.attractor.max_iter=[4,8,16,32]' 'eval.attractor.tol=[1e-3]' > /dev/null
  fi
done
python -m reasoners.compare "$out" --out "$out"
cat "$out/comparison.md"
