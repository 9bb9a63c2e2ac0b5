import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import { generatePassword } from '../auth/password.js';
import { MIN_PASSWORD_LENGTH, UserService } from '../auth/user-service.js';
import { openDatabase, resolveDatabaseTarget } from '../storage/db.js';
import { migrateToLatest } from '../storage/migrate.js';
import { systemClock } from '../storage/values.js';
import { addConfigOptions, configFromFlags, reportConfigErrors, type ConfigFlags } from './config-options.js';

type SetExit = (code: number) => void;
interface PasswordFlags extends ConfigFlags {
  passwordStdin?: boolean;
  generate?: boolean;
}

/** Reads one line from stdin (piped), or asks twice without echo (terminal). */
async function readPassword(flags: PasswordFlags): Promise<string> {
  if (flags.generate) return generatePassword();
  if (flags.passwordStdin || !process.stdin.isTTY) {
    let data = '';
    for await (const chunk of process.stdin) data += String(chunk);
    return data.replace(/\r?\n$/, '');
  }
  const ask = (prompt: string) =>
    new Promise<string>((resolve) => {
      const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: true });
      // Echo nothing while the password is typed.
      (rl as unknown as { _writeToOutput: (s: string) => void })._writeToOutput = (s: string) => {
        if (s.startsWith(prompt)) process.stdout.write(prompt);
      };
      rl.question(prompt, (answer) => {
        rl.close();
        process.stdout.write('\n');
        resolve(answer);
      });
    });
  const first = await ask('Password: ');
  const second = await ask('Repeat password: ');
  if (first !== second) throw new Error('the passwords differ');
  return first;
}

function passwordOptions(cmd: Command): Command {
  return addConfigOptions(
    cmd
      .option('--password-stdin', 'read the password from standard input (one line)')
      .option('--generate', 'generate a random password and print it once'),
  );
}

/** `ai-farm users add|passwd|list`: admin-panel users, run on the server machine. */
export function usersCommands(program: Command, setExit: SetExit): void {
  const withUsers = async (flags: ConfigFlags, fn: (users: UserService) => Promise<void>) => {
    const r = configFromFlags(flags, process.env);
    if (!r.ok) return setExit(reportConfigErrors(r.errors));
    const handle = await openDatabase(resolveDatabaseTarget(r.config));
    try {
      await migrateToLatest(handle.db, handle.dialect);
      await fn(new UserService(handle.db, systemClock));
    } finally {
      await handle.close();
    }
  };
  const printGenerated = (flags: PasswordFlags, username: string, password: string) => {
    if (flags.generate) console.log(`password for ${username}, shown this once:\n${password}`);
  };

  const users = program.command('users').description('admin-panel users (run on the server machine)');
  passwordOptions(
    users
      .command('add')
      .description(`add an admin-panel user (password of at least ${MIN_PASSWORD_LENGTH} characters)`)
      .argument('<username>'),
  ).action(async (username: string, flags: PasswordFlags) => {
    await withUsers(flags, async (svc) => {
      const password = await readPassword(flags);
      const u = await svc.create(username, password, 'cli');
      console.log(`added user ${u.username}`);
      printGenerated(flags, u.username, password);
    });
  });
  passwordOptions(
    users
      .command('passwd')
      .description("set a user's password; ends that user's sessions")
      .argument('<username>'),
  ).action(async (username: string, flags: PasswordFlags) => {
    await withUsers(flags, async (svc) => {
      const u = await svc.findByName(username);
      if (!u) {
        console.error(`no user ${username}`);
        return setExit(1);
      }
      const password = await readPassword(flags);
      await svc.changePassword(u.id, password, { kind: 'cli', name: 'cli' });
      console.log(`password of ${u.username} changed; their sessions were ended`);
      printGenerated(flags, u.username, password);
    });
  });
  addConfigOptions(users.command('list').description('list users').option('--json', 'JSON')).action(
    async (flags: ConfigFlags & { json?: boolean }) => {
      await withUsers(flags, async (svc) => {
        const list = await svc.list();
        if (flags.json) return void console.log(JSON.stringify(list, null, 2));
        console.table(list.map((u) => ({ id: u.id, username: u.username, created: u.created_at })));
      });
    },
  );
}
