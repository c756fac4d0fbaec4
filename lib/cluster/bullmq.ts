// bullmq and ioredis are optional peer dependencies: the core package stays
// as light as it is, and they are loaded only when a ClusterPool or a worker
// needs them.
import { createRequire } from 'node:module';
import { ClusterError } from '../errors.js';

export type BullMQ = typeof import('bullmq');
type RedisClass = typeof import('ioredis').default;
export type Redis = InstanceType<RedisClass>;
export type RedisOptions = import('ioredis').RedisOptions;

let loaded: { bullmq: BullMQ; Redis: RedisClass } | undefined;

/** bullmq and ioredis, resolved from the application as well as from nodemp; ClusterError 'ERR_BULLMQ_MISSING' when either is not installed. */
export function peers(): { bullmq: BullMQ; Redis: RedisClass } {
  if (loaded !== undefined) return loaded;
  const paths = [process.cwd(), import.meta.dirname];
  const require = createRequire(import.meta.url);
  const load = (name: string): unknown => {
    try {
      return require(require.resolve(name, { paths }));
    } catch (error) {
      throw new ClusterError(
        'ERR_BULLMQ_MISSING',
        `nodemp/cluster needs the optional peer dependencies bullmq and ioredis, and ${name} did not load: run \`npm install bullmq ioredis\` (${(error as Error).message.split('\n', 1)[0]})`,
        { cause: error },
      );
    }
  };
  const bullmq = load('bullmq') as BullMQ;
  const ioredis = load('ioredis') as { default?: RedisClass } & RedisClass;
  loaded = { bullmq, Redis: ioredis.default ?? ioredis };
  return loaded;
}

/**
 * A Redis address as ioredis options: 'redis://[user:password@]host[:port][/db]'
 * ('rediss://' for TLS), a Unix socket path, or ioredis options themselves.
 * ClusterError 'ERR_BAD_URL' for anything else.
 */
export function redisOptions(redis: unknown): RedisOptions {
  if (redis === undefined || redis === null) return { host: '127.0.0.1', port: 6379 };
  if (typeof redis === 'object' && !Array.isArray(redis)) return { ...(redis as RedisOptions) };
  if (typeof redis !== 'string') throw new ClusterError('ERR_BAD_URL', `ClusterPool: redis must be a redis:// URL, a socket path or ioredis options, not ${typeof redis}`);
  if (redis.startsWith('/')) return { path: redis };
  let url: URL;
  try {
    url = new URL(redis);
  } catch {
    throw new ClusterError('ERR_BAD_URL', `ClusterPool: redis must be a redis:// or rediss:// URL or a socket path, got '${redis}'`);
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    throw new ClusterError('ERR_BAD_URL', `ClusterPool: redis must be a redis:// or rediss:// URL, got the scheme '${url.protocol}' in '${redis}'`);
  }
  const db = url.pathname.length > 1 ? Number(url.pathname.slice(1)) : 0;
  if (!Number.isInteger(db) || db < 0) throw new ClusterError('ERR_BAD_URL', `ClusterPool: the database in '${redis}' must be a number, got '${url.pathname.slice(1)}'`);
  const options: RedisOptions = { host: url.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1', port: url.port === '' ? 6379 : Number(url.port), db };
  if (url.username !== '') options.username = decodeURIComponent(url.username);
  if (url.password !== '') options.password = decodeURIComponent(url.password);
  if (url.protocol === 'rediss:') options.tls = {};
  return options;
}
