#!/bin/sh
# gmorph report on a tiny deterministic sweep (the zoo and config of test_mpi_search.sh, 1 process):
# - it writes RUN/report.html and RUN/report.md with every section and the four SVG figures;
# - it reads only the checkpoint: summary.md is moved out of the run folder before it runs,
#   and a reworded one put there instead changes nothing;
# - its numbers are the checkpoint's: candidates by status and fine-tune epochs (h5dump of
#   search.h5), best candidate and speed-up and the per-task accuracies (equal to the
#   summary.md the search wrote), one <circle> per fine-tuned candidate with measurements,
#   one learning curve per fine-tuned candidate with as many points as its checkpoint curve;
# - a version-1 checkpoint (an older gmorph's, made here with h5py) still reports, its
#   originals' accuracies and the end's re-timing marked unknown;
# - the HTML is self-contained (no script, nothing fetched) and escapes text;
# - a missing original model leaves the graph drawing out and says so;
# - a folder without search.h5, a missing path and a truncated search.h5 are exit 2, named;
# - with chromium installed: a screenshot (no network) shows the page and each figure drawn.
# Usage: test_report.sh GMORPH GMORPH_SEARCH
set -u
gm=$1
gs=$2
export OMP_WAIT_POLICY=passive OPENBLAS_NUM_THREADS=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fails=$((fails + 1)); }

# ---- a tiny zoo and sweep, as in test_mpi_search.sh --------------------------------------
"$(dirname "$0")/tiny-zoo.sh" "$gm" "$tmp" || exit 1
"$gs" --config "$tmp/search.json" --out "$tmp/r1" 2>"$tmp/r1.err" >/dev/null || { cat "$tmp/r1.err"; exit 1; }
grep -q passed "$tmp/r1/candidates.csv" || { echo "no candidate passed: nothing to report on"; exit 1; }

# ---- the report ----------------------------------------------------------------------------
run=$tmp/r1
html=$run/report.html
md=$run/report.md
# The report reads only the checkpoint: summary.md (kept aside as the truth to compare with)
# leaves the run folder, and later a reworded one with wrong numbers comes back.
summary=$tmp/summary.md
mv "$run/summary.md" "$summary"
"$gm" report "$run" >"$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc -eq 0 ] && [ -s "$html" ] && [ -s "$md" ] && grep -q "$html" "$tmp/out" && grep -q "$md" "$tmp/out" &&
    ok "report written and named" || { bad "report (exit $rc)"; cat "$tmp/out" "$tmp/err"; }
missing=""
for h in "Search" "Candidates by status" "Original models" "Accuracy per task" "Latency" "Best speed-up so far" \
    "Latency against accuracy drop" "Learning curves" "Best fused graph" "Layers skipped"; do
    grep -q "<h[123]>$h</h[123]>" "$html" && grep -q "^##* $h\$" "$md" || missing="$missing [$h]"
done
[ -z "$missing" ] && ok "every section heading in both formats" || bad "headings missing:$missing"
for f in report-progress.svg report-pareto.svg report-curves.svg report-graph.svg; do
    [ -s "$run/$f" ] && grep -q "($f)" "$md" || missing="$missing $f"
done
[ -z "$missing" ] && [ "$(grep -o '<svg ' "$html" | wc -l)" -eq 4 ] && ok "four SVG figures, inline and linked" \
    || bad "figures:$missing, $(grep -o '<svg ' "$html" | wc -l) inline"

# h5dump's values of a column, one a line
column() { h5dump -y -w 0 -d "/candidates/$1" "$run/search.h5" | awk '/DATA \{/ {getline; print; exit}' | tr -d ' ' | tr ',' '\n'; }
column status >"$tmp/status"
i=0 diff=""
for name in pending passed failed aborted filtered duplicate; do
    want=$(grep -cx "$i" "$tmp/status")
    grep -q "^| $name | $want |\$" "$md" && grep -q "<td>$name</td><td class=\"num\">$want</td>" "$html" || diff="$diff $name=$want"
    i=$((i + 1))
done
[ -z "$diff" ] && grep -q "^| all | $(wc -l <"$tmp/status") |\$" "$md" && ok "candidates by status equal the checkpoint's" \
    || { bad "status counts (checkpoint:$diff)"; grep -A9 "^| status" "$md"; }
epochs=$(column epochs | awk '{s += $1} END {print s}')
grep -q "; $epochs in all |" "$md" && ok "fine-tune epochs in all ($epochs) equal the checkpoint's" || bad "epochs: want $epochs"

# summary.md: "speed-up Fx (candidate N) when the search timed it; ... B ms against O ms, **Ex**"
found=$(sed -n 's/.*speed-up \([0-9.]*x\) (candidate \([0-9]*\)).*/\2 \1/p' "$summary")
endx=$(sed -n 's/.*, \*\*\([0-9.]*x\)\*\*.*/\1/p' "$summary")
set -- $found
best="candidate $1, speed-up $endx timed again at the end ($2 when the search timed it)"
[ -n "$found" ] && [ -n "$endx" ] && grep -q "^| best | $best |\$" "$md" && grep -q "<td>$best</td>" "$html" &&
    ok "best candidate and both speed-ups equal summary.md's ($best)" || { bad "best: summary.md says '$found', '$endx'"; grep "best" "$md"; }
grep -q "^| ratio at the end (originals / fused) | $endx |" "$md" && ok "latency table's end ratio equals summary.md's ($endx)" \
    || { bad "end ratio: want $endx"; grep -A8 "^## Latency" "$md"; }
best="candidate $1,"
# Plot 1 replays the search's rule for the best: its last improvement is the best candidate.
last=$(sed -n 's/.*<title>candidate \([0-9]*\): [0-9.]*x<\/title>.*/\1/p' "$run/report-progress.svg" | tail -1)
[ -n "$last" ] && echo "$best" | grep -q "^candidate $last," && ok "best so far ends at the best (candidate $last)" \
    || bad "best so far ends at candidate '$last', not the best"
# summary.md: | task | orig val | fused val | orig test | fused test | drop |; the report adds a val drop column
awk -F' *\\| *' '/^\| [a-z]+ \| [0-9]/ {print $2, $3, $4, $5, $6}' "$summary" >"$tmp/want"
awk -F' *\\| *' '/^\| [a-z]+ \| [0-9]/ && NF == 9 {print $2, $3, $4, $6, $7}' "$md" >"$tmp/got"
[ -s "$tmp/want" ] && cmp -s "$tmp/want" "$tmp/got" && ok "per-task accuracies equal summary.md's" \
    || { bad "accuracy table"; diff "$tmp/want" "$tmp/got"; }
# A summary.md reworded, its numbers changed: the report is the same, byte for byte.
cp "$md" "$tmp/report-before.md"
sed 's/timed again at the end/re-timed last/; s/[0-9]\.[0-9][0-9]/9.99/g' "$summary" >"$run/summary.md"
"$gm" report "$run" >/dev/null 2>"$tmp/err" && cmp -s "$md" "$tmp/report-before.md" &&
    ok "a reworded summary.md changes nothing: the report reads only the checkpoint" \
    || { bad "the report changed with summary.md"; diff "$tmp/report-before.md" "$md" | head; }
rm "$run/summary.md"

column status >"$tmp/s"
column worst_drop >"$tmp/d"
column latency_ms >"$tmp/l"
points=$(paste "$tmp/s" "$tmp/d" "$tmp/l" | awk '$1 >= 1 && $1 <= 3 && $2 !~ /nan/ && $3 !~ /nan/' | wc -l)
circles=$(grep -o '<circle' "$html" | wc -l)
[ "$points" -gt 0 ] && [ "$circles" -eq "$points" ] && [ "$(grep -o '<circle' "$run/report-pareto.svg" | wc -l)" -eq "$points" ] &&
    grep -q "($points points" "$md" && ok "one <circle> per fine-tuned candidate ($points)" \
    || bad "circles: $circles in the HTML, $points fine-tuned candidates"
# Learning curves: a polyline per fine-tuned candidate, with one vertex per point of its curve
# in the checkpoint (h5dump: curve_offset's steps).
h5dump -y -w 0 -d /candidates/curve_offset "$run/search.h5" | awk '/DATA \{/ {getline; print; exit}' | tr -d ' ' |
    tr ',' '\n' | awk 'NR > 1 && $1 > p {print $1 - p} {p = $1}' >"$tmp/npts"
sed -n 's/^<polyline[^>]*class="curve" points="\([^"]*\)">.*/\1/p' "$run/report-curves.svg" |
    awk '{print NF}' >"$tmp/vertices"
[ -s "$tmp/npts" ] && cmp -s "$tmp/npts" "$tmp/vertices" &&
    ok "one learning curve per fine-tuned candidate ($(wc -l <"$tmp/npts")), a vertex per check" ||
    { bad "learning curves"; paste "$tmp/npts" "$tmp/vertices" | head; }
nodes=$(sed -n 's/^Candidate [0-9]*: \([0-9]*\) nodes.*/\1/p' "$md")
boxes=$(grep -c '^<rect x="[0-9.]*" y="[0-9]*" width="156"' "$run/report-graph.svg")
[ -n "$nodes" ] && [ "$boxes" -eq $((nodes + 1)) ] && ok "graph: one box per node and the input ($boxes)" \
    || bad "graph boxes: $boxes for ${nodes:-?} nodes"

# Self-contained: the only URL is SVG's namespace name; no script, no fetched resource.
urls=$(grep -o 'https\?://[^"]*' "$html" | grep -vx 'http://www.w3.org/2000/svg' | wc -l)
[ "$urls" -eq 0 ] && ! grep -qi '<script\|src=\|href=\|url(\|@import' "$html" && ok "HTML is self-contained" \
    || bad "HTML refers to something outside ($urls URLs)"

# Escaping: a run folder named with HTML's special characters.
odd="$tmp/a&b<c>"
cp -r "$run" "$odd"
"$gm" report "$odd" >/dev/null 2>"$tmp/err" && grep -q 'a&amp;b&lt;c&gt;' "$odd/report.html" &&
    ! grep -q 'a&b<c>' "$odd/report.html" && grep -q 'a&b\\<c\\>' "$odd/report.md" && ok "text escaped for HTML and Markdown" \
    || { bad "escaping"; cat "$tmp/err"; }

# A missing original model: the report still comes, without the drawing, and says why.
cp -r "$run" "$tmp/nomodel"
mv "$tmp/colour.h5" "$tmp/colour.away"
"$gm" report "$tmp/nomodel" >"$tmp/out" 2>"$tmp/err"
rc=$?
mv "$tmp/colour.away" "$tmp/colour.h5"
[ $rc -eq 0 ] && [ "$(grep -o '<svg ' "$tmp/nomodel/report.html" | wc -l)" -eq 3 ] &&
    grep -q "graph is not drawn.*colour.h5" "$tmp/nomodel/report.md" && grep -q "not drawn" "$tmp/out" &&
    ok "missing model: report without the graph, saying so" || { bad "missing model (exit $rc)"; cat "$tmp/out" "$tmp/err"; }

# ---- a version-1 checkpoint: an older gmorph's, without the summary --------------------------
if /usr/bin/python3 -c 'import h5py' 2>/dev/null; then
    cp -r "$run" "$tmp/v1"
    # As gm_ckpt.h documents: drop version 2's attributes, set version 1, re-stamp the header block.
    /usr/bin/python3 - "$tmp/v1/search.h5" <<'EOF'
import sys, h5py
p = sys.argv[1]
with h5py.File(p, 'r+') as f:
    for a in ('orig_val', 'base_latency_ms', 'ended', 'final_latency_ms', 'final_base_latency_ms',
              'final_speedup', 'orig_test', 'best_test'):
        del f.attrs[a]
    f.attrs['version'] = 1
raw = bytearray(open(p, 'rb').read())
h = 0xcbf29ce484222325
for x in raw[512:]:
    h = ((h ^ x) * 0x100000001b3) & 0xffffffffffffffff
head = ('gmorph-search 1\nbytes %d\nfnv1a64 %016x\n' % (len(raw), h)).encode()
raw[:512] = head + bytes(512 - len(head))
open(p, 'wb').write(raw)
EOF
    "$gm" report "$tmp/v1" >/dev/null 2>"$tmp/err"
    rc=$?
    v1=$tmp/v1/report.md
    # | task | original val | fused val | val drop | original test | fused test | test drop |: all but fused val unknown
    unknown=$(awk -F' *\\| *' '/^\| [a-z]+ \| / && NF == 9 && $3 == "unknown" && $4 != "unknown" && $6 == "unknown" && $7 == "unknown"' "$v1" | wc -l)
    [ $rc -eq 0 ] && grep -q "version 1 (from an older gmorph)" "$v1" && [ "$unknown" -eq "$(wc -l <"$tmp/want")" ] &&
        ! grep -q "timed again at the end" "$v1" && grep -q "^| best | candidate $1, speed-up [0-9.]*x |\$" "$v1" &&
        ok "version-1 checkpoint: reported, the originals' accuracies and the end's re-timing marked unknown" \
        || { bad "version-1 checkpoint (exit $rc)"; cat "$tmp/err"; grep -A8 "^## Accuracy" "$v1"; }
else
    echo "skipped: no h5py under /usr/bin/python3 to write a version-1 checkpoint"
fi

# ---- bad input -------------------------------------------------------------------------------
mkdir "$tmp/empty"
"$gm" report "$tmp/empty" >/dev/null 2>"$tmp/err"
rc=$?
[ $rc -eq 2 ] && grep -q "$tmp/empty.*no search.h5" "$tmp/err" && ok "folder without search.h5: exit 2, named" \
    || { bad "folder without search.h5: exit $rc"; cat "$tmp/err"; }
"$gm" report "$tmp/nothere" >/dev/null 2>"$tmp/err"
rc=$?
[ $rc -eq 2 ] && grep -q "$tmp/nothere" "$tmp/err" && ok "missing path: exit 2, named" || { bad "missing path: exit $rc"; cat "$tmp/err"; }
mkdir "$tmp/trunc"
size=$(stat -c %s "$run/search.h5")
head -c $((size / 2)) "$run/search.h5" >"$tmp/trunc/search.h5"
"$gm" report "$tmp/trunc/search.h5" >/dev/null 2>"$tmp/err"
rc=$?
[ $rc -eq 2 ] && grep -q "$tmp/trunc/search.h5.*truncated" "$tmp/err" && [ ! -e "$tmp/trunc/report.html" ] &&
    ok "truncated search.h5: exit 2, named" || { bad "truncated search.h5: exit $rc"; cat "$tmp/err"; }
"$gm" report >/dev/null 2>&1
[ $? -eq 2 ] && ok "no argument: exit 2" || bad "no argument"

# ---- what a browser shows ------------------------------------------------------------------
chrome=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chrome" ]; then
    echo "skipped: no chromium (tests/install-deps.sh installs it)"
elif ! command -v python3 >/dev/null; then
    echo "skipped: no python3 to read the screenshots"
else
    net=""
    unshare -n true 2>/dev/null && net="unshare -n" # no network at all where we may; else the page asks for none (above)
    shot() { # file.png width height url
        $net timeout 120 "$chrome" --headless=new --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=1 \
            --user-data-dir="$tmp/chrome" --screenshot="$1" --window-size="$2,$3" "$4" >/dev/null 2>&1
        [ -s "$1" ]
    }
    shot "$tmp/page.png" 1200 3000 "file://$html" && shot "$tmp/progress.png" 920 320 "file://$run/report-progress.svg" &&
        shot "$tmp/pareto.png" 880 400 "file://$run/report-pareto.svg" &&
        shot "$tmp/curves.png" 880 400 "file://$run/report-curves.svg" &&
        shot "$tmp/graph.png" 1000 1000 "file://$run/report-graph.svg" || bad "chromium made no screenshot"
    # A PNG reader in plain python (zlib), then pixels of the figures' own colours where they are drawn.
    cat >"$tmp/pixels.py" <<'EOF'
import struct, sys, zlib

def load(path):
    d = open(path, 'rb').read()
    assert d[:8] == b'\x89PNG\r\n\x1a\n', path + ': not a PNG'
    pos, idat = 8, b''
    while pos < len(d):
        n, kind = struct.unpack('>I4s', d[pos:pos + 8])
        body = d[pos + 8:pos + 8 + n]
        if kind == b'IHDR':
            w, h, depth, ctype, _, _, inter = struct.unpack('>IIBBBBB', body)
        elif kind == b'IDAT':
            idat += body
        pos += 12 + n
    assert depth == 8 and ctype in (2, 6) and inter == 0, path + ': unsupported PNG'
    bpp = 3 if ctype == 2 else 4
    raw, stride, prev, px, i = zlib.decompress(idat), w * bpp, bytearray(w * bpp), [], 0
    for _ in range(h):
        f, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b, c = prev[x], prev[x - bpp] if x >= bpp else 0
            if f == 1: line[x] = (line[x] + a) & 255
            elif f == 2: line[x] = (line[x] + b) & 255
            elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        px.append([bytes(line[x:x + 3]) for x in range(0, stride, bpp)])
        prev = line
    return px

def count(px, colours, box=None):
    """Pixels within a few levels of one of the colours (a renderer may round a little)."""
    x0, y0, x1, y1 = box or (0, 0, len(px[0]), len(px))
    want = [bytes.fromhex(c) for c in colours]
    near = lambda p: any(max(abs(p[k] - w[k]) for k in range(3)) <= 8 for w in want)
    return sum(near(p) for row in px[y0:y1] for p in row[x0:x1] if p != b'\xff\xff\xff')

status = ['59a14f', 'e15759', 'f28e2b']
page = load(sys.argv[1] + '/page.png')
white = sum(p == b'\xff\xff\xff' for row in page for p in row)
total = len(page) * len(page[0])
checks = [
    ('page: not blank (%d of %d pixels drawn)' % (total - white, total), total - white > 0.03 * total),
    ('page: many colours (%d)' % len({p for r in page for p in r}), len({p for r in page for p in r}) > 50),
    ('page: the inline latency-drop figure drawn (its threshold line)', count(page, ['7b4fa0']) >= 30),
    ('progress: step line inside the first panel', count(load(sys.argv[1] + '/progress.png'), ['4e79a7'], (80, 40, 440, 260)) >= 30),
    ('pareto: candidates inside the frame', count(load(sys.argv[1] + '/pareto.png'), status, (80, 20, 640, 340)) >= 10),
    ('pareto: threshold line', count(load(sys.argv[1] + '/pareto.png'), ['7b4fa0'], (80, 20, 640, 340)) >= 30),
    ('curves: lines inside the frame', count(load(sys.argv[1] + '/curves.png'), status, (80, 20, 640, 340)) >= 30),
    ('graph: boxes drawn', count(load(sys.argv[1] + '/graph.png'), ['4e79a7', 'f28e2b', 'e15759', '76b7b2', '59a14f']) >= 200),
]
for what, good in checks:
    print(('ok   ' if good else 'FAIL ') + 'screenshot ' + what)
sys.exit(0 if all(good for _, good in checks) else 1)
EOF
    if [ -s "$tmp/graph.png" ]; then
        python3 "$tmp/pixels.py" "$tmp" || fails=$((fails + 1))
        echo "     (chromium ${net:+under $net, }$("$chrome" --version 2>/dev/null | head -1))"
    fi
fi

[ $fails -eq 0 ] && echo "all passed" || echo "$fails failed"
[ $fails -eq 0 ]
