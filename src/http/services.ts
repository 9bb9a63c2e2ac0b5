import type { TokenService } from '../auth/token-service.js';
import type { ClientService } from '../clients/client-service.js';
import type { TaskService } from '../tasks/task-service.js';

/** What the HTTP routes call; built in main.ts. */
export interface Services {
  tasks: TaskService;
  clients: ClientService;
  tokens: TokenService;
  /** Resolves when the database answers. */
  ping(): Promise<void>;
}
