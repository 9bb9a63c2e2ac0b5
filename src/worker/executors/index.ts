import { CommandExecutor, type CommandExecutorOptions } from './command.js';
import { TrainMnistExecutor } from './train-mnist.js';
import { ExecutorRegistry } from './types.js';

export { CommandExecutor, type CommandExecutorOptions } from './command.js';
export * from './types.js';

/** Options for the executors a worker has by default. */
export interface DefaultExecutorOptions {
  command?: CommandExecutorOptions;
}

/**
 * The executors `ai-farm worker` runs, by task type. Add a built-in executor here (e.g.
 * `train_mnist` from src/mnist/); a program using the SDK can build its own
 * registry instead.
 */
export function defaultExecutors(opts: DefaultExecutorOptions = {}): ExecutorRegistry {
  return new ExecutorRegistry()
    .register('command', new CommandExecutor(opts.command))
    .register('train_mnist', new TrainMnistExecutor());
}
