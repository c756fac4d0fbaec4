// The protocol between nodemp's shared classes and lib/start/descriptors.ts,
// which hands them to a child started by spawn or forkserver. Such a child
// inherits no memory, so each class writes down what it is made of with
// [toChild] (its shared memory as the index of a descriptor the child will
// be given, a function as the index of its reference, nested shared objects
// as themselves), and its
// static [fromParent] makes, in the child, an object over the same memory.
// The classes live in lib/crossing.ts's table.

export const toChild = Symbol('nodemp.toChild');
export const fromParent = Symbol('nodemp.fromParent');

/** What an object is made of, as [toChild] writes it and [fromParent] reads it back. */
export type State = readonly unknown[];

/** What [toChild] gets: the child is given a descriptor for each mapping, once however many objects live in it. */
export interface ChildEncoder {
  /** The index of the descriptor behind `buffer` (a mapShared() or mapFd() mapping). */
  memory(buffer: ArrayBuffer): number;
  /** The index under which the child will be given `fd` (this process keeps its own). */
  descriptor(fd: number): number;
  /** The index of the reference the child loads `fn` by; `what` names it in the error if it has none. */
  reference(fn: Function, what: string): number;
}

/** What [fromParent] gets, in the child. */
export interface ChildDecoder {
  /** The mapping of the descriptor that memory() numbered, one ArrayBuffer per descriptor. */
  memory(index: number): ArrayBuffer;
  /** The descriptor that descriptor() numbered; the caller owns it from then on. */
  descriptor(index: number): number;
  /** The function that reference() numbered, loaded. */
  reference(index: number): Function;
}

/** An object that a starting child is handed by descriptor. */
export interface PassedToChild {
  [toChild](encoder: ChildEncoder): State;
}

/** A class whose objects a starting child is handed by descriptor. */
export interface RebuiltInChild {
  readonly name: string;
  readonly prototype: PassedToChild;
  [fromParent](state: State, decoder: ChildDecoder): PassedToChild;
}
