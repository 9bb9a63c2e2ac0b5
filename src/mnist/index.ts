/**
 * The built-in MNIST model: data, a small MLP in plain TypeScript, training and evaluation.
 * Shared by the reference worker (the `train_mnist` executor) and the server (the held-out
 * evaluation of a round's global model), so it belongs to neither.
 */
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
