// PLACEHOLDER, to be replaced at merge by the function-by-reference work
// (issue #13, item 3), which owns this file. lib/start/descriptors.ts codes
// against exactly these signatures; this stand-in finds no reference itself
// (the tests supply referenceOf) and loads one by importing its module.
import { SerializationError } from '../errors.js';

export interface FunctionRef {
  readonly module: string;
  readonly name: string;
  readonly check?: string;
}

/** The reference a child loads `fn` by; SerializationError when no module exports it. */
export function referenceOf(fn: Function, what: string): FunctionRef {
  throw new SerializationError(`nodemp: ${what} (${fn.name || 'anonymous'}) cannot be found by reference yet (placeholder)`);
}

/** In the child: the function `ref` names. */
export async function loadReference(ref: FunctionRef): Promise<Function> {
  const exported: unknown = (await import(ref.module))[ref.name];
  if (typeof exported !== 'function') throw new SerializationError(`nodemp: ${ref.module} exports no function ${ref.name}`);
  return exported;
}
