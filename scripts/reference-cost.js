// What finding a function's reference costs (lib/start/reference.ts), in a
// program shaped as users write them: an entry module that imports its tasks
// from a sibling module and looks functions up in its top-level code.
// Run: node scripts/reference-cost.js [--many] (--many first loads a few
// hundred modules from node_modules, as a big service would). Prints one JSON
// object, milliseconds per step.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const reference = pathToFileURL(join(root, 'dist', 'start', 'reference.js')).href;
const many = process.argv.includes('--many');

const app = `
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { referenceOf } from ${JSON.stringify(reference)};
import { task, otherTask } from './tasks.mjs';

export function first() {}
export function second() {}
function hidden() {}

const require = createRequire(${JSON.stringify(join(root, 'package.json'))});
if (${many}) {
  for (const name of ['vite', 'typescript', 'chai', '@vitest/expect', '@vitest/runner', '@vitest/snapshot', 'postcss', 'msgpackr', 'node-gyp', 'cmake-js', 'prebuildify', 'tinyglobby', 'magic-string']) {
    try {
      await import(pathToFileURL(require.resolve(name)).href);
    } catch {
      // A package missing from this install only makes the program smaller.
    }
  }
}

function ms(step) {
  const start = performance.now();
  try {
    step();
  } catch {
    // An expected refusal: its cost is what is measured.
  }
  return Number((performance.now() - start).toFixed(2));
}

const result = { commonjsModules: Object.keys(require.cache).length };
// This module is still evaluating (top-level await above).
result.entryFirst = ms(() => referenceOf(first, 'bench'));
result.entrySecond = ms(() => referenceOf(second, 'bench'));
result.cached = ms(() => referenceOf(first, 'bench'));
result.importedModule = ms(() => referenceOf(task, 'bench'));
result.importedModuleAgain = ms(() => referenceOf(otherTask, 'bench'));
// A module no guess names (imported dynamically from elsewhere): the scripts must be listed.
const dir = mkdtempSync(join(tmpdir(), 'nodemp-late-'));
writeFileSync(join(dir, 'late.mjs'), 'export function late() {}\\nexport function later() {}\\n');
const late = await import(pathToFileURL(join(dir, 'late.mjs')).href);
result.unguessedModule = ms(() => referenceOf(late.late, 'bench'));
result.knownModule = ms(() => referenceOf(late.later, 'bench'));
result.notExported = ms(() => referenceOf(hidden, 'bench'));
console.log(JSON.stringify(result));
`;

const dir = mkdtempSync(join(tmpdir(), 'nodemp-reference-cost-'));
try {
  writeFileSync(join(dir, 'tasks.mjs'), 'export function task() {}\nexport function otherTask() {}\n');
  writeFileSync(join(dir, 'app.mjs'), app);
  const out = execFileSync(process.execPath, [join(dir, 'app.mjs')], { encoding: 'utf8' });
  console.log(JSON.stringify({ many, ...JSON.parse(out) }));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
