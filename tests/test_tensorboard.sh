#!/bin/sh
# The live view: a tiny deterministic sweep (tests/tiny-zoo.sh) writes a TensorBoard
# event file in its run folder, and TensorBoard's own reader (EventAccumulator, from
# the tensorboard package of the test venv) reads back every scalar: per candidate
# its status, speed-up, worst drop and drop before fine-tuning, equal to
# candidates.jsonl's; each fine-tuned candidate's learning curve, point for point;
# the sweep's best speed-up ending at the best's, and its pass rate.
# Usage: test_tensorboard.sh GMORPH GMORPH_SEARCH PYTHON
set -u
gm=$1
gs=$2
py=$3
export OMP_WAIT_POLICY=passive OPENBLAS_NUM_THREADS=1
if ! "$py" -c 'import tensorboard' 2>/dev/null; then
    echo "skipped: $py has no tensorboard package (tests/install-deps.sh installs it)"
    exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$(dirname "$0")/tiny-zoo.sh" "$gm" "$tmp" || exit 1
"$gs" --config "$tmp/search.json" --out "$tmp/run" 2>"$tmp/err" >/dev/null || { cat "$tmp/err"; exit 1; }
ls "$tmp/run"/events.out.tfevents.* >/dev/null 2>&1 || { echo "FAIL no event file in the run folder"; exit 1; }
best=$(sed -n 's/.*(candidate \([0-9-]*\)).*/\1/p' "$tmp/run/summary.md" | head -1)
TF_CPP_MIN_LOG_LEVEL=3 "$py" - "$tmp/run" "$best" <<'PY'
import json, math, sys, warnings
warnings.filterwarnings('ignore')
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

run, best = sys.argv[1], int(sys.argv[2])
acc = EventAccumulator(run, size_guidance={'scalars': 0})
acc.Reload()
tags = set(acc.Tags()['scalars'])
series = {t: {e.step: e.value for e in acc.Scalars(t)} for t in tags}
rows = [json.loads(l) for l in open(run + '/candidates.jsonl')]
status = {'pending': 0, 'passed': 1, 'failed': 2, 'aborted': 3, 'filtered': 4, 'duplicate': 5}
fails = []
def close(a, b):  # TensorBoard keeps float32; jsonl prints 3 to 5 decimals
    return abs(a - b) <= 1e-3 * max(1.0, abs(b))
def check(what, good):
    print(('ok   ' if good else 'FAIL ') + what)
    if not good: fails.append(what)

check('candidate/status: one value per candidate (%d), each its status' % len(rows),
      len(series.get('candidate/status', {})) == len(rows) and
      all(series['candidate/status'][r['id']] == status[r['status']] for r in rows))
tuned = [r for r in rows if 'speedup' in r]
check('candidate/speedup and worst_drop_points of the %d fine-tuned, equal to candidates.jsonl' % len(tuned),
      len(tuned) > 0 and all(close(series['candidate/speedup'][r['id']], r['speedup']) and
                             close(series['candidate/worst_drop_points'][r['id']], 100 * r['worst_drop'])
                             for r in tuned))
check('candidate/drop0_points of each fine-tuned',
      all(close(series['candidate/drop0_points'][r['id']], 100 * r['drop0']) for r in tuned if 'drop0' in r))
ncurve = 0
for r in rows:
    for p in r.get('curve', []):
        ncurve += 1
        s = series.get('curve/c%d/worst_drop_points' % r['id'], {})
        l = series.get('curve/c%d/loss' % r['id'], {})
        if p['epoch'] not in s or (p['loss'] is not None and not close(l.get(p['epoch'], math.nan), p['loss'])):
            fails.append('curve of candidate %d at epoch %d' % (r['id'], p['epoch']))
    if r.get('curve'):  # the last check is the row's own worst drop
        last = r['curve'][-1]['epoch']
        if not close(series['curve/c%d/worst_drop_points' % r['id']][last], 100 * r['worst_drop']):
            fails.append('curve of candidate %d ends at %g, the row says %g' % (
                r['id'], series['curve/c%d/worst_drop_points' % r['id']][last], 100 * r['worst_drop']))
check('learning curves: every check of every candidate (%d points), ending at its worst drop' % ncurve,
      ncurve > 0 and not any(f.startswith('curve') for f in fails))
b = series.get('search/best_speedup', {})
check('search/best_speedup ends at the best\'s (candidate %d)' % best,
      len(b) > 0 and close(b[max(b)], next(r['speedup'] for r in rows if r['id'] == best)))
p = series.get('search/pass_rate', {})
check('search/pass_rate ends at passed over fine-tuned',
      len(p) > 0 and close(p[max(p)], sum(r['status'] == 'passed' for r in tuned) / len(tuned)))
check('search/candidates_per_hour and search/groups_busy written',
      len(series.get('search/candidates_per_hour', {})) == len(rows) and len(series.get('search/groups_busy', {})) == len(rows))
sys.exit(1 if fails else 0)
PY
