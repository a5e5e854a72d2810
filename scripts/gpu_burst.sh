#!/bin/bash
# One GPU burst (run from the repo root on the borrowed GPU machine, `.gpu` carried; see
# scripts/gpu_pack.py): the clean 8x model (v2) and the footage 8x / 16x fine-tunes train side by
# side on one GPU for SECS seconds each, stop with SIGINT (the run state is saved), and export:
# v2 as fp16 (split in 15 MB parts: the tool returns files of at most 16 MiB), the footage models
# as int8. A second call on the still-warm machine with NEW=0 resumes the three runs.
# Env: SECS (500), NEW (1: start from the shipped weights; 0: resume), OUTD ($OUT), R (/tmp/r),
#      PY (python3), DEV (cuda), B2 / BF (batch of v2 / of the footage runs: 128 / 64),
#      STEPS2 / STEPSF (schedule length of v2 / of the footage runs: 1000000, i.e. stopped by time)
#      and COOL2 / COOLF (their --cooldown: the last N steps decay the learning rate to zero; pick
#      STEPS so the run reaches its end inside SECS: v2 ran 0.09 s a step, the footage runs 0.19),
#      INIT2 / INITF8 / INITF16 (the weights each new run starts from: the shipped file of its own
#      kind by default; weights/sdesr_ve_8x.safetensors starts a footage run from the clean v2),
#      RUNS ("v2 f8 f16": which of the three runs to train and export; fewer share the GPU less),
#      TF (CPU threads of each footage run, 5: its degradations run on the CPU),
#      X2 (extra `train score` options of v2, e.g. "--shift 4 --dropout 0.1" or
#      "--shift 4 --scale-jitter 0.06 --color-jitter 0.1"), and a second clean
#      run v2b (RUNS="v2 v2b") that starts from INIT2 too, with its own X2B: two settings side by side.
set -u
DEV=${DEV:-cuda}; SECS=${SECS:-500}; OUTD=${OUTD:-$OUT}; PY=${PY:-python3}; R=${R:-/tmp/r}
B2=${B2:-128}; BF=${BF:-64}; TF=${TF:-5}; NEW=${NEW:-1}; RUNS=${RUNS:-v2 f8 f16}
STEPS2=${STEPS2:-1000000}; STEPSF=${STEPSF:-1000000}; COOL2=${COOL2:-0}; COOLF=${COOLF:-0}
INIT2=${INIT2:-weights/sdesr_ve_8x.safetensors}; INITF8=${INITF8:-weights/sdesr_ve_8x_footage.safetensors}
INITF16=${INITF16:-weights/sdesr_ve_16x.safetensors}; X2=${X2:-}; X2B=${X2B:-}
export PYTHONPATH=$PWD${EXTRA_PP:+:$EXTRA_PP} PYTHONUNBUFFERED=1
S="$PY -m sdesr_gui.cli"
$PY -c "import torch; print(torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"
mkdir -p $R
[ -f .gpu/data/manifest.csv ] || $PY scripts/gpu_pack.py unpack .gpu .gpu/data
new=""; [ "$NEW" = 1 ] && new="--new"
common="$new --arch v2 --crop 0 --sigma-data 0.1 --p-mean -2.3 --p-std 1.4 --ckpt-every 1000000 --device $DEV --quiet"
on() { case " $RUNS " in *" $1 "*) return 0;; esac; return 1; }
on v2 && timeout -s INT $SECS $S train score .gpu/data --run $R/v2 $common --init $INIT2 \
  --steps $STEPS2 --cooldown $COOL2 --batch $B2 --lr 3e-4 --warmup 200 --ema 0.999 --val-every 1000 --threads 4 $X2 > $R/v2.log 2>&1 &
on v2b && timeout -s INT $SECS $S train score .gpu/data --run $R/v2b $common --init $INIT2 \
  --steps $STEPS2 --cooldown $COOL2 --batch $B2 --lr 3e-4 --warmup 200 --ema 0.999 --val-every 1000 --threads 4 $X2B > $R/v2b.log 2>&1 &
on f8 && timeout -s INT $SECS $S train score .gpu/data --run $R/f8 $common --init $INITF8 \
  --steps $STEPSF --cooldown $COOLF --degradation realistic --scale 8 --batch $BF --lr 2e-4 --warmup 100 --ema 0.998 --val-every 500 --threads $TF > $R/f8.log 2>&1 &
on f16 && timeout -s INT $SECS $S train score .gpu/data --run $R/f16 $common --init $INITF16 \
  --steps $STEPSF --cooldown $COOLF --degradation realistic --scale 16 --batch $BF --lr 2e-4 --warmup 100 --ema 0.998 --val-every 500 --threads $TF > $R/f16.log 2>&1 &
for i in $(seq 1 $((SECS / 60))); do
  sleep 60
  [ -z "$(jobs -rp)" ] && break  # every run reached the end of its schedule
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null
  tail -qn1 $R/*/metrics.jsonl 2>/dev/null | cut -c1-160
done
wait
tail -n3 $R/*.log
for r in v2 v2b; do
  on $r && $S train export --run $R/$r --out $R/$r.safetensors --overwrite && split -b 15M -d $R/$r.safetensors $OUTD/${r}_fp16.part
done
thr=$($PY -c "import json,sys; from safetensors import safe_open; f=safe_open('weights/sdesr_ve_8x_footage.safetensors','pt'); print(json.loads(f.metadata()['sdesr']).get('footage_threshold',''))" 2>/dev/null)
on f8 && $S train export --run $R/f8 --int8 ${thr:+--footage-threshold $thr} --out $OUTD/foot8_int8.safetensors --overwrite
on f16 && $S train export --run $R/f16 --int8 --out $OUTD/foot16_int8.safetensors --overwrite
(cd $R && tar czf $OUTD/metrics.tgz $(for r in $RUNS; do echo $r.log $r/metrics.jsonl $r/train_state.json; done))
ls -la $OUTD
