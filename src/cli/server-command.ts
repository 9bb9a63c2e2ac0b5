import type { Command } from 'commander';
import { addConfigOptions, configFromFlags, reportConfigErrors, type ConfigFlags } from './config-options.js';

/** `ai-farm server`: runs until SIGINT or SIGTERM, then shuts down in order and exits 0. */
export function serverCommand(program: Command, setExit: (code: number) => void): void {
  addConfigOptions(program.command('server').description('run the AI Farm server')).action(
    async (flags: ConfigFlags) => {
      const r = configFromFlags(flags, process.env);
      if (!r.ok) return setExit(reportConfigErrors(r.errors));
      // Signals are caught from the start: one that arrives while the server starts (or the
      // instant after it printed its URL, before a later handler would be in place) must
      // still mean "stop in order", not the default of dying on the spot.
      let received: string | undefined;
      let onStop: ((sig: string) => void) | undefined;
      const onSignal = (sig: string) => {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        if (onStop) onStop(sig);
        else received = sig;
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      // Loaded on use: `ai-farm tasks ...` should not pay for the whole server at start-up.
      const { startServer } = await import('../main.js');
      const server = await startServer(r.config, {
        console: process.stdout.isTTY ? 'pretty' : 'json',
      }).catch((err: unknown) => {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        throw err;
      });
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
        onStop = (sig: string) => {
          server.logger.info({ signal: sig }, 'signal received');
          server.stop().then(resolve, (err: unknown) => {
            console.error('shutdown failed:', err);
            setExit(1);
            resolve();
          });
        };
        if (received) onStop(received);
      });
    },
  );
}
