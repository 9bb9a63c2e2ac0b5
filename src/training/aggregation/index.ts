/** Aggregation strategies over stored safetensors updates, and their worker-thread runner. */
export * from './types.js';
export * from './layout.js';
export * from './math.js';
export * from './fedavg.js';
export { robustChunkElements, runRobust, type RobustSpec } from './robust.js';
export { runAggregation, validateParams } from './aggregate-job.js';
export * from './runner.js';
