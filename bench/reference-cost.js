// What finding a function's reference costs (lib/start/reference.ts): the
// first lookup pays for an inspector session that lists every loaded script;
// later ones reuse what it learnt. Run: node bench/reference-cost.js [--many]
// (--many first loads a few hundred modules from node_modules, as a big
// service would). Prints one JSON object, milliseconds per step.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { referenceOf } from '../dist/start/reference.js';

export function first() {}
export function second() {}
function hidden() {}

const require = createRequire(import.meta.url);
const loaded = [];
if (process.argv.includes('--many')) {
  for (const name of ['vite', 'typescript', 'chai', '@vitest/expect', '@vitest/runner', '@vitest/snapshot', 'postcss', 'msgpackr', 'node-gyp', 'cmake-js', 'prebuildify', 'tinyglobby', 'magic-string']) {
    try {
      loaded.push(await import(pathToFileURL(require.resolve(name)).href));
    } catch {
      // A package missing from this install only makes the program smaller.
    }
  }
}

function ms(step) {
  const start = performance.now();
  step();
  return Number((performance.now() - start).toFixed(2));
}

const dir = mkdtempSync(join(tmpdir(), 'nodemp-reference-cost-'));
try {
  const result = {};
  // This module is still evaluating (top-level await above): its exports come from its source.
  result.entryFirst = ms(() => referenceOf(first, 'bench'));
  result.entrySecond = ms(() => referenceOf(second, 'bench'));
  result.cached = ms(() => referenceOf(first, 'bench'));
  // A module loaded after the first lookup: the inspector lists the scripts again.
  writeFileSync(join(dir, 'late.mjs'), 'export function late() {}\nexport function later() {}\n');
  const late = await import(pathToFileURL(join(dir, 'late.mjs')).href);
  result.newModule = ms(() => referenceOf(late.late, 'bench'));
  result.knownModule = ms(() => referenceOf(late.later, 'bench'));
  // Not exported anywhere: every loaded module is searched before the error.
  result.notExported = ms(() => {
    try {
      referenceOf(hidden, 'bench');
    } catch {
      // The error is the expected outcome; its cost is what is measured.
    }
  });
  const scripts = Object.keys(require.cache).length;
  console.log(JSON.stringify({ many: process.argv.includes('--many'), commonjsModules: scripts, ...result }));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
