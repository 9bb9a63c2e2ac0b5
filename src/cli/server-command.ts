import type { Command } from 'commander';
import { addConfigOptions, configFromFlags, reportConfigErrors, type ConfigFlags } from './config-options.js';

/** `ai-farm server`: runs until SIGINT or SIGTERM, then shuts down in order and exits 0. */
export function serverCommand(program: Command, setExit: (code: number) => void): void {
  addConfigOptions(program.command('server').description('run the AI Farm server')).action(
    async (flags: ConfigFlags) => {
      const r = configFromFlags(flags, process.env);
      if (!r.ok) return setExit(reportConfigErrors(r.errors));
      // Loaded on use: `ai-farm tasks ...` should not pay for the whole server at start-up.
      const { startServer } = await import('../main.js');
      const server = await startServer(r.config, { console: process.stdout.isTTY ? 'pretty' : 'json' });
      if (server.createdAdminToken) {
        console.log(
          [
            '',
            'First start: an admin token was created. It is shown this once; keep it safe:',
            '',
            `    ${server.createdAdminToken}`,
            '',
            `Try: curl -H "Authorization: Bearer ${server.createdAdminToken}" ${server.httpUrl}/api/tasks`,
            '',
          ].join('\n'),
        );
      }
      if (server.createdAdminPassword) {
        console.log(
          [
            '',
            `First start: admin-panel user "${server.config.ADMIN_USERNAME}" was created with this password,`,
            'shown this once (change it in the panel, or with `ai-farm users passwd`):',
            '',
            `    ${server.createdAdminPassword}`,
            '',
          ].join('\n'),
        );
      }
      console.log(
        `AI Farm server on ${server.httpUrl} (admin panel: ${server.httpUrl}/, API docs: ${server.httpUrl}/docs)`,
      );
      await new Promise<void>((resolve) => {
        const onSignal = (sig: string) => {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
          server.logger.info({ signal: sig }, 'signal received');
          server.stop().then(resolve, (err: unknown) => {
            console.error('shutdown failed:', err);
            setExit(1);
            resolve();
          });
        };
        process.on('SIGINT', onSignal);
        process.on('SIGTERM', onSignal);
      });
    },
  );
}
