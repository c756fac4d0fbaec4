// The benchmark's headline rows as an SVG chart: for each workload, nodemp's
// bar beside each peer's, all measured in the same run. Every row is a time
// (lower is better); the values of one workload can differ by orders of
// magnitude, so each workload gets a logarithmic axis of its own.

// [metric as run.js names it, label on the chart, peers to show (all when absent)]
const HEADLINE = [
  ['process start->join (fork, joinSync)', 'Process start → join (start() from a callback)'],
  ['process start->join (forkserver, plain parent, await join)', 'Process start → join, forkserver'],
  ['process start->first message (spawn)', 'Process start → first message, spawn'],
  ['Lock acquireSync+release, uncontended', 'Lock acquire + release'],
  ['Event set -> waiter running, other process (waitSync), one-way', 'Event set → waiter running'],
  ['Semaphore ping-pong between two processes (acquireSync), round trip', 'Semaphore ping-pong'],
  ['Queue 1 producer/1 consumer, small objects { i }, time per message (lower is better)', 'Queue, small objects, per message'],
  ['Queue ping-pong round trip, two processes (putSync/getSync)', 'Queue ping-pong'],
  ['Pipe ping-pong round trip, two processes (send/recvSync)', 'Pipe ping-pong'],
  ['Pool.map, tiny tasks, chunksize 1, 2 workers, time per task', 'Pool.map, per task'],
  ['Pool.apply round trip (await apply())', 'Pool.apply round trip'],
];

const WIDTH = 1000;
const LABEL_W = 330;
const BAR_H = 16;
const GAP = 4;
const GROUP_GAP = 18;
const TITLE_H = 20;
// Room to the right of the longest bar for its value and ratio.
const PLOT_W = WIDTH - LABEL_W - 230;

const escape = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function fmt(x) {
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

/** The SVG text for `results` (run.js's { metric: { unit, nodemp, peer: value } }), or null if no headline row is there. */
export function chart(results, title) {
  const groups = [];
  for (const [metric, label] of HEADLINE) {
    const row = results[metric];
    if (!row || typeof row.nodemp !== 'number') continue;
    const bars = [['nodemp', row.nodemp]];
    for (const [peer, value] of Object.entries(row)) {
      if (peer !== 'unit' && peer !== 'nodemp' && typeof value === 'number' && value > 0) bars.push([peer, value]);
    }
    groups.push({ label, unit: row.unit, bars });
  }
  if (groups.length === 0) return null;
  const height = 50 + groups.reduce((h, g) => h + TITLE_H + g.bars.length * (BAR_H + GAP) + GROUP_GAP, 0);
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="system-ui, sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="12" y="22" font-size="15" font-weight="bold">${escape(title)}</text>`,
    `<text x="12" y="40" fill="#555">Time per operation, lower is better; each workload on a logarithmic axis of its own; all bars from one run.</text>`,
  ];
  let y = 56;
  for (const g of groups) {
    out.push(`<text x="12" y="${y + 14}" font-weight="bold">${escape(g.label)} (${escape(g.unit)})</text>`);
    y += TITLE_H;
    const values = g.bars.map(([, v]) => v);
    const lo = Math.log10(Math.min(...values) / 3);
    const hi = Math.log10(Math.max(...values) * 1.2);
    const scale = (v) => Math.max(2, ((Math.log10(v) - lo) / (hi - lo)) * PLOT_W);
    const nodemp = g.bars[0][1];
    for (const [name, value] of g.bars) {
      const mine = name === 'nodemp';
      const ratio = mine ? '' : value >= nodemp ? ` (nodemp ${(value / nodemp).toFixed(1)}× faster)` : ` (nodemp ${(nodemp / value).toFixed(1)}× slower)`;
      const w = scale(value);
      out.push(
        `<text x="${LABEL_W - 8}" y="${y + BAR_H - 4}" text-anchor="end" fill="${mine ? '#000' : '#333'}">${escape(name.length > 46 ? `${name.slice(0, 44)}…` : name)}</text>`,
        `<rect x="${LABEL_W}" y="${y}" width="${w.toFixed(1)}" height="${BAR_H}" fill="${mine ? '#2f6fde' : '#b9bfc8'}"/>`,
        `<text x="${(LABEL_W + w + 6).toFixed(1)}" y="${y + BAR_H - 4}" fill="#333">${fmt(value)}${escape(ratio)}</text>`,
      );
      y += BAR_H + GAP;
    }
    y += GROUP_GAP;
  }
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
