// What crosses between a manager's server and its clients, after the authkey
// handshake (lib/listener.ts), as Connection frames (lib/connection.ts) whose
// bodies the queue codec encodes (msgpack only on the server's side: see
// decodeUntrusted() in lib/codec.ts).
//
// The server speaks first, once: [0, GREETING, [serverPid, limit]], where
// `limit` is the longest frame it takes; a client refuses to send a longer one.
// Then each request is an array [id, op, ...operands]:
//   [id, CALL, objectId, method, args]   call an exposed method
//   [id, CREATE, typeid, args]           make an object; the reply is a token
//   [id, INFO]                           { objects, connections, pid }
//   [id, SHUTDOWN]                       stop the server
//   [0, INCREF | DECREF, objectId]       this connection's proxies: one more, one fewer
//   [0, SEND | ADOPT, objectId]          a proxy put in a message / taken out of one
//   [0, HELLO, pid]                      who the client is (for warnings)
// Requests with id 0 get no reply; every other one gets exactly one:
//   [id, OK, value] | [id, FAILED, error] | [id, PROXY, token]
// A PROXY reply's token comes with a reference the asking connection already
// holds. A request the server cannot decode or use is answered
// [0 or its id, FAILED, ManagerError ERR_BAD_REQUEST], and the server goes on.
//
// References: an object lives while its count is above zero, the sum of what
// each open connection holds (INCREF/DECREF, a connection's share dropped
// when it closes: its process died or exited) and of what is in transit in
// messages (SEND when a proxy is encoded into one, ADOPT when a receiver
// takes it over: a receiver's ADOPT may reach the server before the sender's
// SEND, so the transit count may dip below zero meanwhile; ADOPT never
// changes the total).
import { ManagerError } from '../errors.js';
import type { Address } from '../listener.js';

export const CALL = 1;
export const CREATE = 2;
export const INFO = 3;
export const SHUTDOWN = 4;
export const INCREF = 5;
export const DECREF = 6;
export const SEND = 7;
export const ADOPT = 8;
export const HELLO = 9;

export const OK = 0;
export const FAILED = 1;
export const PROXY = 2;
export const GREETING = 3;

/** The longest frame a server takes unless told otherwise: 64 MiB. */
export const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/** How a proxy names its object: which server, which object there, what it can call. */
export interface Token {
  readonly typeid: string;
  readonly address: Address;
  readonly id: number;
  readonly exposed: readonly string[];
}

/** A token as a server's reply carries it: the address is the client's already. */
export type WireToken = [typeid: string, id: number, exposed: string[]];

/** A token as text, as it crosses inside any message (lib/codec.ts's by-name crossing). */
export function tokenText(token: Token): string {
  return JSON.stringify([token.typeid, token.address, token.id, token.exposed]);
}

/** tokenText() back; a ManagerError for anything else. */
export function parseToken(text: string): Token {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = null;
  }
  if (
    !Array.isArray(parsed) ||
    parsed.length !== 4 ||
    typeof parsed[0] !== 'string' ||
    !isAddress(parsed[1]) ||
    !Number.isSafeInteger(parsed[2]) ||
    !Array.isArray(parsed[3]) ||
    !(parsed[3] as unknown[]).every((m) => typeof m === 'string')
  ) {
    throw new ManagerError('ERR_BAD_REQUEST', `a proxy in a message is malformed: ${text.slice(0, 200)}`);
  }
  return { typeid: parsed[0], address: parsed[1], id: parsed[2], exposed: parsed[3] };
}

function isAddress(v: unknown): v is Address {
  return typeof v === 'string' || (Array.isArray(v) && v.length === 2 && typeof v[0] === 'string' && Number.isInteger(v[1]));
}

/** One string per address, for maps keyed by server. */
export function addressKey(address: Address): string {
  return typeof address === 'string' ? `unix:${address}` : `tcp:${address[0]}:${address[1]}`;
}

/** An address for the messages of errors. */
export function showAddress(address: Address): string {
  if (typeof address !== 'string') return `${address[0]}:${address[1]}`;
  return address[0] === '\0' ? `@${address.slice(1)}` : address;
}
