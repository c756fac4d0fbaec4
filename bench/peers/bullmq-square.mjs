// The task of bench/cluster.js as a BullMQ sandboxed processor (a file BullMQ runs in a child process of its own).
export default async function square(job) {
  return job.data.x * job.data.x;
}
