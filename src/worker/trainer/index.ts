/** Built-in MNIST trainer: a small MLP in plain TypeScript, for demos, tests and benchmarks. */
export { evaluate, loadWeights, saveWeights, train } from './trainer.js';
export type {
  EvaluateOutcome,
  TrainerFailure,
  TrainOptions,
  TrainOutcome,
  TrainProgress,
} from './trainer.js';
export { HELD_OUT, loadMnist, splitRange, type MnistData, type Shard, type Split } from './mnist-data.js';
export { initParams, mlpLayout, type MlpLayout } from './mlp.js';
