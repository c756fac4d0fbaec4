// bench/pool.js's tasks as a workerpool worker script.
import workerpool from 'workerpool';
import { burn, square } from './pool-task.mjs';

workerpool.worker({ square, burn });
