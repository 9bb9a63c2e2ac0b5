import { Command, CommanderError } from 'commander';
import { AppError } from '../errors.js';
import { adminCommands } from './admin-commands.js';
import { demoCommand } from './demo-command.js';
import { serverCommand } from './server-command.js';
import { modelsCommands } from './models-commands.js';
import { tasksCommands } from './tasks-commands.js';
import { workerCommand } from './worker-command.js';
import { usersCommands } from './users-commands.js';

/** The `ai-farm` command line; returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  let exitCode = 0;
  const setExit = (code: number) => {
    exitCode = code;
  };
  const program = new Command('ai-farm')
    .description('AI Farm: farm machine-learning training out to many machines')
    .exitOverride()
    .showHelpAfterError();
  serverCommand(program, setExit);
  adminCommands(program, setExit);
  demoCommand(program, setExit);
  workerCommand(program, setExit);
  tasksCommands(program, setExit);
  modelsCommands(program, setExit);
  usersCommands(program, setExit);
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
    if (err instanceof AppError) {
      console.error(`error: ${err.message}`);
      return 1;
    }
    throw err;
  }
  return exitCode;
}
