import type { TokenService } from '../auth/token-service.js';
import type { ClientService } from '../clients/client-service.js';
import type { MonitoringService } from '../observability/monitoring.js';
import type { TaskService } from '../tasks/task-service.js';

/** What the HTTP routes call; built in main.ts. */
export interface Services {
  tasks: TaskService;
  clients: ClientService;
  tokens: TokenService;
  monitoring: MonitoringService;
  /** Resolves when the database answers. */
  ping(): Promise<void>;
}
