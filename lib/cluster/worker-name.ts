/** The name each `nodemp worker` gives its Redis connection: a ClusterPool reads the processes behind its queue from it (for map's default chunksize). */
export const WORKER_NAME = /^nodemp-p(\d+)-/;

export function workerName(processes: number, host: string, pid: number): string {
  return `nodemp-p${processes}-${host}-${pid}`;
}
